import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.reporting.summary import aggregate_seeds, markdown_table, write_summary


def _recs(values, status="passed"):
    return [{"benchmark": "perplexity", "model": "m", "dataset": "d", "tokenizer": "byte", "seed": i,
             "status": status, "metrics": {"ppl": v}} for i, v in enumerate(values)]


def test_seed_statistics_textbook_example():
    """[1, 2, 3, 4]: mean 2.5, sample sd sqrt(5/3), t(0.975, 3) = 3.182446 (printed tables), half-width 2.054."""
    (row,) = aggregate_seeds(_recs([1.0, 2.0, 3.0, 4.0]))
    s = row["ppl"]
    assert s["mean"] == pytest.approx(2.5) and s["std"] == pytest.approx(math.sqrt(5 / 3))
    assert s["ci95"] == pytest.approx([2.5 - 3.182446 * math.sqrt(5 / 3) / 2, 2.5 + 3.182446 * math.sqrt(5 / 3) / 2],
                                      abs=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1.0, 1e4, allow_nan=False), min_size=2, max_size=12))
def test_seed_statistics_match_an_independent_implementation(values):
    """Against Python's ``statistics`` module (not numpy, which the summary uses)."""
    (row,) = aggregate_seeds(_recs(values))
    s = row["ppl"]
    assert s["mean"] == pytest.approx(statistics.fmean(values), rel=1e-9)
    assert s["std"] == pytest.approx(statistics.stdev(values), rel=1e-6, abs=1e-9)
    lo, hi = s["ci95"]
    assert lo <= s["mean"] <= hi and hi - lo == pytest.approx(2 * (s["mean"] - lo))


def test_only_passed_records_are_aggregated():
    assert aggregate_seeds(_recs([1.0, 2.0], status="failed")) == []


def test_summary_files(tmp_path):
    recs = _recs([9.0, 9.2, 9.1]) + [{"benchmark": "perplexity", "test_id": "x", "status": "failed", "reason": "why"}]
    write_summary(tmp_path, recs, "run", {})
    md = (tmp_path / "summary.md").read_text()
    assert "## Over seeds" in md and "9.1 ± 0.1" in md and "`x`: failed — why" in md
    assert markdown_table(recs).count("\n") == len(recs) + 1
