"""Statistics against textbook values, independent formulas and simulation — never against the scipy call wrapped."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.stats import bonferroni, compare_paired, describe, holm
from harness.stats.intervals import bootstrap_interval, t_interval

# Student's sleep data (Cushny & Peebles, as in Student 1908; R's `sleep`): extra hours of sleep, drug 1 and 2, same
# ten patients. R: t.test(extra ~ group, data = sleep, paired = TRUE) -> t = -4.0621, df = 9, p-value = 0.002833,
# 95% CI of the mean difference (1 - 2) [-2.4598858, -0.7001142], mean difference -1.58.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


# ------------------------------------------------------------------------------------------------- intervals


def test_t_interval_textbook_value():
    """n = 5, mean 3, s = sqrt(2.5): t(0.975, 4) = 2.776445 (printed tables) -> half-width 1.963243."""
    lo, hi = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert lo == pytest.approx(3 - 2.776445 * math.sqrt(2.5) / math.sqrt(5), abs=1e-5)
    assert hi == pytest.approx(3 + 2.776445 * math.sqrt(2.5) / math.sqrt(5), abs=1e-5)


def test_describe_one_seed_claims_no_interval():
    s = describe([9.3])
    assert (s.n, s.mean, s.std, s.t_ci, s.boot_ci, s.half_width) == (1, 9.3, None, None, None, None)


def test_describe_identical_values_has_a_zero_width_interval():
    s = describe([2.0, 2.0, 2.0])
    assert s.std == 0 and s.t_ci == (2.0, 2.0) and s.boot_ci == (2.0, 2.0)


def test_describe_refuses_non_finite_values():
    with pytest.raises(ValueError, match="non-finite"):
        describe([1.0, float("nan")])


@pytest.mark.parametrize("n", [3, 5, 10])
def test_t_interval_covers_the_true_mean_at_its_nominal_rate(n):
    """Simulation: 2,000 normal samples; the 95% interval covers the true mean 95% of the time (binomial sd 0.5%;
    the band is +-2 points, 4 sd)."""
    rng = np.random.default_rng(1234 + n)
    mu, sigma = 7.0, 0.3
    covered = 0
    trials = 2000
    for _ in range(trials):
        lo, hi = t_interval(rng.normal(mu, sigma, n))
        covered += lo <= mu <= hi
    assert abs(covered / trials - 0.95) < 0.02


@settings(max_examples=5, deadline=None)
@given(mu=st.floats(-100, 100), sigma=st.floats(0.01, 10), seed=st.integers(0, 2**31))
def test_interval_coverage_holds_for_any_location_and_scale(mu, sigma, seed):
    """Property: the t-interval's coverage does not depend on the true mean or the noise scale (n = 4, 1,000 trials,
    band +-3 points, 4.4 sd)."""
    rng = np.random.default_rng(seed)
    covered = sum(lo <= mu <= hi for lo, hi in (t_interval(rng.normal(mu, sigma, 4)) for _ in range(1000)))
    assert abs(covered / 1000 - 0.95) < 0.03


def test_bootstrap_interval_covers_at_about_its_nominal_rate():
    """BCa on n = 20 normal samples: coverage close to 95% (bootstrap intervals undercover a little at small n; the
    band 0.90-0.98 is wide enough for that and for 300 trials, yet fails a broken interval)."""
    rng = np.random.default_rng(7)
    trials = 300
    covered = sum(lo <= 0.0 <= hi for lo, hi in (bootstrap_interval(rng.normal(0.0, 1.0, 20), seed=i)
                                                 for i in range(trials)))
    assert 0.90 <= covered / trials <= 0.98


def test_bootstrap_interval_is_reproducible_and_inside_the_data_range():
    x = [9.1, 9.4, 9.2, 9.8, 9.3]
    assert bootstrap_interval(x) == bootstrap_interval(x)
    lo, hi = bootstrap_interval(x)
    assert min(x) <= lo < hi <= max(x)


# ---------------------------------------------------------------------------------------------- paired tests


def test_paired_t_test_on_students_sleep_data():
    c = compare_paired(SLEEP_2, SLEEP_1)  # differences 1 - 2, as in R's output
    assert c.n == 10 and c.mean_diff == pytest.approx(-1.58)
    assert c.t_stat == pytest.approx(-4.0621, abs=1e-4) and c.p_t == pytest.approx(0.002833, abs=1e-6)
    assert c.diff_ci == pytest.approx((-2.4598858, -0.7001142), abs=1e-6)
    # Cohen's d_z = mean(d) / sd(d) = t / sqrt(n) (an identity of the definitions, not the same code path).
    assert c.d_z == pytest.approx(-4.0621 / math.sqrt(10), abs=1e-4)
    assert c.significant and "significant (p = 0.0028, n = 10)" == c.verdict()


def _exact_wilcoxon_p(d):
    """Two-sided exact signed-rank p by enumerating all 2^n sign patterns (no ties, no zeros)."""
    n = len(d)
    ranks = {v: i + 1 for i, v in enumerate(sorted(abs(x) for x in d))}
    w_plus = sum(ranks[abs(x)] for x in d if x > 0)
    total = n * (n + 1) // 2
    observed = min(w_plus, total - w_plus)
    count = sum(1 for signs in itertools.product((0, 1), repeat=n)
                if sum(r for r, s in zip(range(1, n + 1), signs) if s) <= observed)
    return min(1.0, 2 * count / 2 ** n)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 10_000), min_size=2, max_size=10, unique=True), st.data())
def test_wilcoxon_matches_exact_enumeration(magnitudes, data):
    signs = data.draw(st.lists(st.sampled_from([-1, 1]), min_size=len(magnitudes), max_size=len(magnitudes)))
    d = [m * s / 100 for m, s in zip(magnitudes, signs)]
    a = [10.0] * len(d)
    b = [10.0 + x for x in d]
    # The differences must be exactly representable for ranks to match: compare on the rounded differences.
    c = compare_paired(a, b)
    assert c.p_wilcoxon == pytest.approx(_exact_wilcoxon_p([round(y - x, 9) for x, y in zip(a, b)]), rel=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.5, 1e4, allow_nan=False), min_size=1, max_size=12))
def test_identical_samples_are_never_significant(values):
    c = compare_paired(values, list(values))
    if len(values) == 1:
        assert not c.testable and "no test possible" in c.verdict()
    else:
        assert c.p_t == 1.0 and c.p_wilcoxon == 1.0 and c.d_z == 0.0 and not c.significant
        assert c.verdict().startswith("not significant") and f"n = {len(values)}" in c.verdict()


def test_one_seed_says_no_test_is_possible():
    c = compare_paired([9.3], [9.1])
    assert c.p_t is None and c.p_wilcoxon is None and not c.significant
    assert c.verdict().startswith("n = 1: one seed, no test possible")


def test_false_positive_rate_is_alpha_under_the_null():
    """Simulation: paired normal data with no true difference, n = 5: p <= 0.05 about 5% of the time (800 trials,
    binomial sd 0.77 points; band +-3 points)."""
    rng = np.random.default_rng(99)
    trials = 800
    hits = sum(compare_paired(a, a + rng.normal(0, 1, 5)).p_t <= 0.05
               for a in (rng.normal(9, 1, 5) for _ in range(trials)))
    assert abs(hits / trials - 0.05) < 0.03


# ----------------------------------------------------------------------------------------------- corrections


def test_holm_textbook_example():
    """p = (0.01, 0.04, 0.03, 0.005): sorted 0.005, 0.01, 0.03, 0.04 -> 4x, 3x, 2x, 1x = 0.02, 0.03, 0.06, 0.04,
    made monotone -> 0.02, 0.03, 0.06, 0.06."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert bonferroni([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.04, 0.16, 0.12, 0.02])


def test_untestable_comparisons_are_not_part_of_the_family():
    adjusted = holm([0.01, None, 0.02])  # m = 2: 2 x 0.01 = 0.02, then max(0.02, 1 x 0.02)
    assert adjusted[1] is None and adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02)


def _holm_rejections(p, alpha):
    """Holm's procedure as published: walk the sorted p-values, reject while p_(k) <= alpha / (m - k + 1)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = set()
    for k, i in enumerate(order):
        if p[i] > alpha / (len(p) - k):
            break
        rejected.add(i)
    return rejected


pvals = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(pvals, st.floats(0.001, 0.2))
def test_holm_adjusted_p_values_reject_exactly_what_the_step_down_procedure_rejects(p, alpha):
    adjusted = holm(p)
    assert {i for i, a in enumerate(adjusted) if a <= alpha} == _holm_rejections(p, alpha)


@settings(max_examples=200, deadline=None)
@given(pvals)
def test_corrections_are_monotone_and_bounded(p):
    h, b = holm(p), bonferroni(p)
    for i in range(len(p)):
        assert p[i] <= h[i] + 1e-15 and h[i] <= b[i] + 1e-15 and b[i] <= 1.0  # raw <= Holm <= Bonferroni <= 1
        for j in range(len(p)):
            if p[i] <= p[j]:
                assert h[i] <= h[j] + 1e-15  # order preserving
