"""Mean and intervals of one metric over seeds: n, mean, sample std, a Student-t interval and a bootstrap interval.

Why both intervals: the t-interval is exact for normal data and is the one tables lead with; the bootstrap (BCa)
interval makes no normality assumption, and where the two disagree the reader learns the t-interval is not to be
trusted. With very few seeds neither is worth much, so every interval is printed with its n.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

N_RESAMPLES = 2000  # bootstrap resamples; the seed is fixed so a summary is reproducible to the last digit
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class SeedStats:
    """One metric over n seeds. Intervals are ``None`` when n < 2 (no interval is possible from one value)."""

    n: int
    mean: float
    std: float | None  # sample standard deviation (ddof = 1)
    t_ci: tuple[float, float] | None
    boot_ci: tuple[float, float] | None
    level: float = 0.95

    @property
    def half_width(self) -> float | None:
        """Half the t-interval: what ``mean ± x`` prints."""
        return None if self.t_ci is None else (self.t_ci[1] - self.t_ci[0]) / 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["t_ci"] = list(self.t_ci) if self.t_ci else None
        d["boot_ci"] = list(self.boot_ci) if self.boot_ci else None
        return d


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean: mean ± t(1 - (1 - level)/2, n - 1) · s / √n."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        raise ValueError("a t-interval needs at least 2 values")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def bootstrap_interval(values: Sequence[float], level: float = 0.95, n_resamples: int = N_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """BCa bootstrap interval for the mean (scipy.stats.bootstrap), the percentile interval where BCa is undefined
    (its acceleration is 0/0 when the jackknife means are all equal)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError("a bootstrap interval needs at least 2 values")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa warns (and returns nan) on degenerate resamples; we fall back
            res = stats.bootstrap((x,), np.mean, confidence_level=level, n_resamples=n_resamples, method=method,
                                  vectorized=True, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return lo, hi
    return float(x.min()), float(x.max())


def describe(values: Sequence[float], level: float = 0.95, bootstrap: bool = True) -> SeedStats:
    """n, mean, sample std and both intervals of ``values`` (non-finite values are an error: a diverged seed is a
    failed record, never a number to average)."""
    x = [float(v) for v in values]
    if not x:
        raise ValueError("describe() needs at least one value")
    if not all(math.isfinite(v) for v in x):
        raise ValueError(f"non-finite value among {x}")
    n, mean = len(x), float(np.mean(x))
    if n < 2:
        return SeedStats(n=1, mean=mean, std=None, t_ci=None, boot_ci=None, level=level)
    return SeedStats(n=n, mean=mean, std=float(np.std(x, ddof=1)), t_ci=t_interval(x, level),
                     boot_ci=bootstrap_interval(x, level) if bootstrap else None, level=level)
