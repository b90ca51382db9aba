"""The regression gate and baseline files as a library: rules, one-line messages, statuses, file errors."""
import json

import pytest

from harness.results.baseline import (
    SCHEMA,
    SCHEMA_VERSION,
    Baseline,
    BaselineCell,
    BaselineError,
    from_records,
    load_baseline,
    updated,
    write_baseline,
)
from harness.results.gate import GateConfig, GateRule, check_metric, gate_config, judge_cell, judge_groups
from harness.results.targets import TargetsError

PPL = GateRule("ppl", "lower", 0.05, "quality", "t.toml [gate] ppl")
SPEEDUP = GateRule("speedup_vs_reference", "higher", 0.5, "speed-ratio", "t.toml [gate] speedup_vs_reference")
CONFIG = GateConfig(rules={"ppl": PPL}, match_protocol=("split",))


# ------------------------------------------------------------------------------------------------------ rules


def test_gate_table_parses_per_budget_tolerances():
    targets = {"gate": {"alpha": 0.01, "match_protocol": ["split"],
                        "ppl": {"direction": "lower", "tolerance": {"micro": 0.01, "smoke": 0.02}},
                        "speedup_vs_reference": {"direction": "higher", "tolerance": 0.5, "kind": "speed-ratio"}}}
    micro = gate_config(targets, "t.toml", "micro")
    assert micro.alpha == 0.01 and micro.match_protocol == ("split",)
    assert micro.rules["ppl"].tolerance == 0.01 and micro.rules["ppl"].kind == "quality"
    assert micro.rules["speedup_vs_reference"].kind == "speed-ratio"
    assert "ppl" not in gate_config(targets, "t.toml", "full").rules  # no tolerance at that budget: not gated


@pytest.mark.parametrize("spec, words", [
    ({"direction": "down", "tolerance": 0.1}, "direction 'down' must be"),
    ({"direction": "lower", "tolerance": -1}, "tolerance must be a relative number"),
    ({"direction": "lower", "tolerance": 0.1, "kind": "speed"}, "kind 'speed' must be"),
    ({"direction": "lower", "tolerance": 0.1, "tol": 1}, "unknown key(s) tol"),
    (0.05, "write it as { direction"),
])
def test_a_bad_gate_rule_is_one_line_naming_the_fix(spec, words):
    with pytest.raises(TargetsError) as exc:
        gate_config({"gate": {"ppl": spec}}, "fixtures/targets/x.toml", "smoke")
    assert words in str(exc.value) and "fixtures/targets/x.toml [gate] ppl" in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("metric", ["tokens_per_s", "fused_fp32_fwd_bwd_ms", "train_wall_s"])
def test_raw_speed_metrics_cannot_be_gated(metric):
    """A slower machine must not fail the gate: only ratios measured side by side are gated."""
    with pytest.raises(TargetsError, match="raw timing or rate"):
        gate_config({"gate": {metric: {"direction": "higher", "tolerance": 0.5, "kind": "speed-ratio"}}}, "x", "smoke")


def test_the_shipped_targets_files_parse_at_every_budget():
    from harness.config import BUDGET_NAMES
    from harness.options import TARGETS_DIR
    from harness.results.gate import check_gate_tables

    check_gate_tables(TARGETS_DIR, BUDGET_NAMES)


# ------------------------------------------------------------------------------------------------- one metric


def test_regression_message_is_one_line_with_both_numbers_and_the_allowance():
    c = check_metric(PPL, 31.2, 35.0)
    assert c.status == "regressed"
    assert c.message() == "ppl regressed 31.20 → 35.00 (+12.2% > 5% allowed)"


@pytest.mark.parametrize("rule, base, value, status", [
    (PPL, 10.0, 10.5, "ok"),          # exactly the tolerance is allowed
    (PPL, 10.0, 10.51, "regressed"),
    (PPL, 10.0, 9.0, "improved"),
    (SPEEDUP, 500.0, 260.0, "ok"),     # higher is better: a drop of 48% is within 50%
    (SPEEDUP, 500.0, 240.0, "regressed"),
    (SPEEDUP, 500.0, 800.0, "improved"),
])
def test_direction_and_tolerance(rule, base, value, status):
    assert check_metric(rule, base, value).status == status


def test_speed_ratio_is_indifferent_to_a_slower_machine():
    """Both paths twice as slow on a slower machine: the ratio (what is gated) is unchanged, so the gate passes."""
    fast = {"fused_ms": 0.6, "reference_ms": 352.0}
    slow = {k: v * 2.0 for k, v in fast.items()}
    ratio = lambda m: m["reference_ms"] / m["fused_ms"]  # noqa: E731
    assert check_metric(SPEEDUP, ratio(fast), ratio(slow)).status == "ok"


# --------------------------------------------------------------------------------------------------- one cell


def test_cell_statuses():
    base, proto = {"ppl": 10.0}, {"split": "test"}
    assert judge_cell("c", {"ppl": 10.0}, proto, CONFIG, None, None).status == "new"
    assert judge_cell("c", {"ppl": 10.0}, proto, GateConfig(), base, proto).status == "ungated"
    assert judge_cell("c", {"ppl": 10.2}, proto, CONFIG, base, proto).status == "ok"
    assert judge_cell("c", {"ppl": 8.0}, proto, CONFIG, base, proto).status == "improved"
    bad = judge_cell("c", {"ppl": 12.0}, proto, CONFIG, base, proto, "b.json")
    assert bad.regressed and bad.message() == "ppl regressed 10.00 → 12.00 (+20.0% > 5% allowed) vs baseline b.json"
    changed = judge_cell("c", {"ppl": 12.0}, {"split": "valid"}, CONFIG, base, proto)
    assert changed.status == "protocol-changed" and "split test → valid" in changed.note and not changed.regressed


# ---------------------------------------------------------------------------------------------- seed groups


def _cells(base, new, group="perplexity|model=m|budget=micro"):
    return [judge_cell(f"{group}|seed={i}", {"ppl": v}, {}, CONFIG, {"ppl": b}, {}) for i, (b, v) in
            enumerate(zip(base, new))]


def test_groups_pair_seeds_and_say_whether_a_change_is_systematic():
    same = judge_groups(_cells([10.0, 10.2, 9.9], [10.0, 10.2, 9.9]))
    (g,) = same
    assert g.seeds == 3 and g.status == "ok" and g.comparison["p_t"] == 1.0
    assert g.comparison["verdict"].startswith("not significant") and "n = 3" in g.comparison["verdict"]
    shifted = judge_groups(_cells([10.0, 10.2, 9.9, 10.1, 10.05], [11.01, 11.18, 10.93, 11.12, 11.04]))
    (g,) = shifted
    assert g.status == "regressed" and g.comparison["significant"] and g.comparison["p_t_holm"] < 0.05


def test_one_seed_per_group_says_no_test_is_possible():
    (g,) = judge_groups(_cells([10.0], [12.0]))
    assert g.comparison["p_t"] is None and "no test possible" in g.comparison["verdict"]


def test_holm_spans_every_group_of_the_run():
    cells = _cells([10.0, 10.2, 9.9, 10.1], [10.5, 10.6, 10.4, 10.7], "a") + _cells([5, 6, 7, 8], [5, 6, 7, 8], "b")
    groups = {g.group_id: g.comparison for g in judge_groups(cells)}
    assert groups["a"]["p_t_holm"] == pytest.approx(min(1.0, 2 * groups["a"]["p_t"]))  # m = 2, smallest p
    assert groups["b"]["p_t_holm"] == 1.0


# -------------------------------------------------------------------------------------------------- baselines


def _record(seed, ppl, status="passed"):
    return {"benchmark": "perplexity", "cell_id": f"perplexity|model=m|seed={seed}|budget=micro|device=cpu",
            "seed": seed, "budget": "micro", "status": status, "protocol": {"split": "test", "window": 64},
            "metrics": {"ppl": ppl, "tokens_per_s": 1e5, "n_words": None}, "environment": {"git_commit": "abc"}}


def test_baseline_round_trip_keeps_cells_groups_and_rules(tmp_path):
    recs = [_record(0, 10.0), _record(1, 10.4), _record(2, 99.0, status="failed")]
    base = from_records(recs, lambda bench, budget: CONFIG, meta={"command": "pytest benches …"})
    path = write_baseline(base, tmp_path / "b.json")
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA and data["schema_version"] == SCHEMA_VERSION
    assert data["gate"]["perplexity"]["micro"]["ppl"]["tolerance"] == 0.05
    back = load_baseline(path)
    assert set(back.cells) == {r["cell_id"] for r in recs[:2]}  # only passed cells
    cell = back.get(recs[1]["cell_id"])
    assert cell.metrics == {"ppl": 10.4} and cell.protocol == {"split": "test"}  # machine speed never stored
    assert cell.group_id == "perplexity|model=m|budget=micro|device=cpu" and cell.seed == 1
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]  # atomic: no temporary file left behind


def test_update_keeps_cells_not_measured_again():
    old = Baseline(cells={"a": BaselineCell("a", "p", "a", 0, "micro", {"ppl": 1.0}),
                          "b": BaselineCell("b", "p", "b", 0, "micro", {"ppl": 2.0})})
    new = Baseline(cells={"b": BaselineCell("b", "p", "b", 0, "micro", {"ppl": 3.0})})
    merged = updated(old, new)
    assert merged.cells["a"].metrics == {"ppl": 1.0} and merged.cells["b"].metrics == {"ppl": 3.0}


@pytest.mark.parametrize("content, words", [
    (None, "no such file"),
    ("{not json", "is not valid JSON"),
    ('{"cells": {}}', "is not an lmbench baseline"),
    (json.dumps({"schema": SCHEMA, "schema_version": 99, "cells": {}}), "schema version 99"),
    (json.dumps({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "cells": {"x": {"metrics": {"ppl": "a"}}}}),
     "needs \"metrics\" of finite numbers"),
])
def test_unusable_baseline_is_one_line_naming_the_file_and_the_fix(tmp_path, content, words):
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BaselineError) as exc:
        load_baseline(path)
    msg = str(exc.value)
    assert words in msg and str(path) in msg and "\n" not in msg
    assert "--update-baseline" in msg
