import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.reporting.summary import aggregate_seeds, markdown_table, write_summary


def _recs(values, status="passed"):
    return [{"benchmark": "perplexity", "model": "m", "dataset": "d", "tokenizer": "byte", "seed": i,
             "status": status, "metrics": {"ppl": v}} for i, v in enumerate(values)]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1.0, 1e4, allow_nan=False), min_size=2, max_size=12))
def test_seed_statistics_match_numpy(values):
    (row,) = aggregate_seeds(_recs(values))
    stats = row["ppl"]
    assert np.isclose(stats["mean"], np.mean(values)) and np.isclose(stats["std"], np.std(values, ddof=1))
    lo, hi = stats["ci95"]
    assert lo <= stats["mean"] + 1e-9 and stats["mean"] <= hi + 1e-9


def test_only_passed_records_are_aggregated():
    assert aggregate_seeds(_recs([1.0, 2.0], status="failed")) == []


def test_summary_files(tmp_path):
    recs = _recs([9.0, 9.2, 9.1]) + [{"benchmark": "perplexity", "test_id": "x", "status": "failed", "reason": "why"}]
    write_summary(tmp_path, recs, "run", {})
    md = (tmp_path / "summary.md").read_text()
    assert "## Over seeds" in md and "9.1 ± 0.1" in md and "`x`: failed — why" in md
    assert markdown_table(recs).count("\n") == len(recs) + 1
