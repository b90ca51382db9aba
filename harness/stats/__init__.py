"""Statistics for benchmark numbers: intervals over seeds, paired model comparisons, multiple-testing corrections.

Why a package of its own: reporters, the regression gate and ``harness compare`` all need the same numbers, computed
the same way (scipy.stats underneath), and none of them should depend on another step of the flow. It depends on
nothing in lmbench.
"""
from harness.stats.intervals import SeedStats, describe
from harness.stats.multiple import bonferroni, holm
from harness.stats.paired import PairedComparison, compare_paired

__all__ = ["PairedComparison", "SeedStats", "bonferroni", "compare_paired", "describe", "holm"]
