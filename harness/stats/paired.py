"""Paired comparison of two models measured on the same seeds and conditions.

Why paired: seed i of model A and seed i of model B share the data order and evaluation tokens, so the difference
per seed removes that shared noise; a paired t-test (scipy.stats.ttest_rel) and the Wilcoxon signed-rank test
(scipy.stats.wilcoxon, no normality assumption) test whether the mean difference is zero, and Cohen's d_z — the
mean difference over the standard deviation of the differences — says how large it is in units of its own noise.
With one seed no test is possible, and the result says so instead of printing a number.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from harness.stats.intervals import t_interval


@dataclass
class PairedComparison:
    """B against A on the same n seeds: differences are B − A. p-values are two-sided; ``None`` when n < 2."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    rel_diff: float | None  # mean_diff / mean_a (None when mean_a is 0)
    diff_ci: tuple[float, float] | None  # t-interval of the mean difference
    t_stat: float | None
    p_t: float | None
    p_wilcoxon: float | None
    d_z: float | None
    p_t_holm: float | None = None  # filled by the caller once the family of comparisons is known
    p_wilcoxon_holm: float | None = None
    alpha: float = 0.05
    note: str | None = None  # why a test was not possible, or what made it degenerate
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def testable(self) -> bool:
        return self.p_t is not None

    @property
    def significant(self) -> bool:
        """Significant after correction when a corrected p is known, else at α uncorrected."""
        p = self.p_t_holm if self.p_t_holm is not None else self.p_t
        return p is not None and p <= self.alpha

    def verdict(self) -> str:
        """Plain words, always with n: 'significant (p_holm = 0.003, n = 5)', 'not significant (…)', or why not."""
        if not self.testable:
            return self.note or f"n = {self.n}: no test possible"
        p, label = (self.p_t_holm, "p_holm") if self.p_t_holm is not None else (self.p_t, "p")
        words = "significant" if self.significant else "not significant"
        return f"{words} ({label} = {fmt_p(p)}, n = {self.n})"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["diff_ci"] = list(self.diff_ci) if self.diff_ci else None
        d["significant"], d["verdict"] = self.significant, self.verdict()
        return d


def fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def compare_paired(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> PairedComparison:
    """Compare paired samples (a[i] and b[i] share seed i). Identical samples give p = 1 and d_z = 0."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f"paired samples must be two equally long non-empty lists, got {len(x)} and {len(y)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("paired samples must be finite")
    n = len(x)
    d = y - x
    mean_a, mean_b, mean_diff = float(x.mean()), float(y.mean()), float(d.mean())
    rel = mean_diff / mean_a if mean_a != 0 else None
    base = dict(n=n, mean_a=mean_a, mean_b=mean_b, mean_diff=mean_diff, rel_diff=rel, alpha=alpha)
    if n < 2:
        return PairedComparison(**base, diff_ci=None, t_stat=None, p_t=None, p_wilcoxon=None, d_z=None,
                                note="n = 1: one seed, no test possible (run more seeds: --seeds 0,1,2)")
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        # Every seed differs by the same amount: the t statistic is 0/0 (identical samples) or infinite. Identical
        # samples are no evidence of a difference; a constant non-zero shift is, but a t-test cannot say how much.
        if mean_diff == 0.0:
            return PairedComparison(**base, diff_ci=(0.0, 0.0), t_stat=0.0, p_t=1.0, p_wilcoxon=1.0, d_z=0.0,
                                    note=None)
        wil = _wilcoxon(d)
        return PairedComparison(**base, diff_ci=(mean_diff, mean_diff), t_stat=math.copysign(math.inf, mean_diff),
                                p_t=0.0, p_wilcoxon=wil, d_z=math.copysign(math.inf, mean_diff),
                                note="every seed differs by the same amount (zero variance of the differences)")
    t = stats.ttest_rel(y, x)
    return PairedComparison(**base, diff_ci=t_interval(d), t_stat=float(t.statistic), p_t=float(t.pvalue),
                            p_wilcoxon=_wilcoxon(d), d_z=mean_diff / sd)


def _wilcoxon(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of the differences; 1.0 when every difference is zero (scipy refuses)."""
    from scipy import stats

    if np.all(d == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-n and ties warnings: the exact/normal choice is scipy's
        return float(stats.wilcoxon(d).pvalue)
