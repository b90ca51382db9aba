"""Efficiency (``harness.measure.efficiency``): the curve maths (log-log interpolation, first crossing, Pareto
frontier), evaluations every k steps that change neither the weights nor the training time, FLOPs and time to a
target (and a run that never gets there), the benchmark in-process at the micro budget, and the session report's
frontier across models."""
from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.measure import efficiency
from harness.measure.efficiency import first_crossing, loglog_interp, pareto_frontier
from harness.options import parse_options
from harness.reporting.perf import efficiency_md
from harness.results.records import read_records
from harness.session import Session
from tests.helpers import DATA_DIR, REPO, TOY

PROPS = settings(max_examples=60, deadline=None)


# --------------------------------------------------------------------------------------------- curve maths


@PROPS
@given(xs=st.lists(st.floats(1.0, 1e12), min_size=2, max_size=8, unique=True), k=st.floats(0.05, 1.0),
       a=st.floats(1.5, 1e3), u=st.floats(0.0, 1.0))
def test_loglog_interp_is_exact_for_power_laws_and_never_extrapolates(xs, k, a, u):
    xs = sorted(xs)
    ys = [a * x ** -k for x in xs]
    for x, y in zip(xs, ys):
        assert loglog_interp(x, xs, ys) == pytest.approx(y, rel=1e-9)
    x = min(max(math.exp(math.log(xs[0]) + u * (math.log(xs[-1]) - math.log(xs[0]))), xs[0]), xs[-1])
    assert loglog_interp(x, xs, ys) == pytest.approx(a * x ** -k, rel=1e-9)
    assert loglog_interp(xs[0] * 0.99, xs, ys) is None and loglog_interp(xs[-1] * 1.01, xs, ys) is None


@PROPS
@given(k=st.floats(0.05, 1.0), a=st.floats(10.0, 1e3), f=st.floats(0.05, 0.95))
def test_first_crossing_interpolates_a_power_law_exactly(k, a, f):
    xs = [1e6 * 4 ** i for i in range(8)]
    ys = [a * (x / xs[0]) ** -k for x in xs]
    target = math.exp(math.log(ys[0]) + f * (math.log(ys[-1]) - math.log(ys[0])))
    i, x = first_crossing(xs, ys, target)
    assert ys[i] <= target < ys[i - 1]
    assert x == pytest.approx(xs[0] * (target / a) ** (-1 / k), rel=1e-9)
    assert first_crossing(xs, ys, ys[-1] * 0.999) is None  # never reached
    assert first_crossing(xs, ys, ys[0] * 2) == (0, xs[0])  # reached at the first evaluation: its x, a bound


@PROPS
@given(st.lists(st.tuples(st.floats(1.0, 1e6), st.floats(1.0, 100.0)), min_size=1, max_size=30))
def test_pareto_frontier_is_exactly_the_undominated_points(points):
    front = pareto_frontier(points)
    costs, losses = [c for c, _ in front], [v for _, v in front]
    assert costs == sorted(costs) and all(b < a for a, b in zip(losses, losses[1:]))
    for c, v in front:  # nothing is at most as costly and strictly better
        assert not any(c2 <= c and v2 < v for c2, v2 in points)
    for c, v in points:  # everything else is matched or beaten by a frontier point
        assert any(fc <= c and fv <= v for fc, fv in front)


# ------------------------------------------------------------------------------------ training with evals


@pytest.fixture(scope="module")
def session(tmp_path_factory, one_thread) -> Session:
    tmp = tmp_path_factory.mktemp("eff")
    return Session(parse_options(models=TOY, budget="micro", cache_dir=tmp / "c", results_dir=tmp / "r",
                                 data_dir=DATA_DIR))


@pytest.fixture(scope="module")
def runs(session):
    """The toy trained once plainly and once with evaluations every k steps (its own weights key)."""
    (cell,) = session.cells("efficiency", ("model", "dataset", "seed"))
    plan = efficiency.PLANS["micro"]
    tcfg = session.provisioner.train_config(cell)
    ids = session.data.ids(cell.dataset, "valid", cell.tokenizer)[: plan.eval_tokens]
    callback = efficiency.EvalCallback(ids, tcfg.seq_len, plan.every(tcfg.steps), tcfg.steps)
    with_evals = session.provision(cell, callback=callback, variant=plan.variant(tcfg.steps))
    plain = session.provision(cell)
    return plan, plain, with_evals


def test_evaluations_every_k_steps_change_neither_weights_nor_training_time(runs):
    plan, plain, pm = runs
    steps, every = pm.train_cfg.steps, plan.every(pm.train_cfg.steps)
    assert [e["step"] for e in pm.train.evals] == list(range(every, steps + 1, every)) + (
        [steps] if steps % every else [])
    assert pm.weights_key != plain.weights_key  # cached apart: a plain run has no evaluations to give back
    a, b = plain.module.state_dict(), pm.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # evaluating in between trains the very same weights
    walls = [e["train_wall_s"] for e in pm.train.evals]
    assert walls == sorted(walls) and walls[-1] <= pm.train.wall_s + 1e-6 and pm.train.eval_wall_s > 0
    assert all(e["ppl"] == pytest.approx(math.exp(e["nll"])) for e in pm.train.evals)


def test_a_callback_needs_a_variant(session):
    (cell,) = session.cells("efficiency", ("model", "dataset", "seed"))
    with pytest.raises(ValueError, match="needs a variant"):
        session.provision(cell, callback=lambda step, model: None)


def test_flops_and_time_to_target_and_a_target_never_reached(runs):
    plan, _, pm = runs
    plan = dataclasses.replace(plan, target_over_floor=1.95)  # what the toy reaches in its 64 micro steps
    res = efficiency.measure(pm, plan)
    m, p = res.metrics, res.protocol
    assert res.status is None and m["reached_target"] == 1.0, res.notes
    curve = p["curve"]
    assert [c["train_flops"] for c in curve] == [c["tokens"] * m["train_flops_per_token"] for c in curve]
    first = next(c for c in curve if c["ppl"] <= m["target_ppl"])
    assert m["flops_to_target_first_eval"] == first["train_flops"] and m["time_to_target_s"] == first["train_wall_s"]
    assert m["flops_to_target"] <= m["flops_to_target_first_eval"]  # interpolated: no later than the evaluation
    assert p["target"]["rule"] == f"{plan.target_over_floor} x entropy-rate floor"
    assert p["frontier"] == [list(x) for x in pareto_frontier([(c["train_flops"], c["ppl"]) for c in curve])]
    for budget in plan.flop_budgets:
        key = f"ppl_at_{budget:.0e}_flops".replace("+", "")
        inside = curve[0]["train_flops"] <= budget <= curve[-1]["train_flops"]
        assert (key in m) == inside  # interpolated inside the curve, never extrapolated
    never = efficiency.measure(pm, dataclasses.replace(plan, target_over_floor=0.5))  # below the entropy floor
    assert never.metrics["reached_target"] == 0.0 and "flops_to_target" not in never.metrics
    assert "never reached the target" in never.notes


# ---------------------------------------------------------------------------------------- bench and report


def test_efficiency_benchmark_in_process_at_micro(inproc):
    result = inproc.runpytest(str(REPO / "benches" / "test_efficiency.py"), "-m", "efficiency", "--models", TOY,
                              "--budget", "micro", "--results-dir", str(inproc.results))
    result.assert_outcomes(passed=1)
    (rec,) = read_records(inproc.results / "records.jsonl")
    m = rec["metrics"]
    assert rec["status"] == "passed" and m["n_evals"] >= 8 and m["final_ppl"] == rec["protocol"]["curve"][-1]["ppl"]
    assert rec["protocol"]["targets"] == {"ppl_over_floor": {"max": 2.0}, "ppl_over_unigram": {"max": 1.0}}
    assert os.path.getsize(rec["artefacts"]["efficiency_plot"]) > 5000
    report = (inproc.results / "efficiency.md").read_text()
    assert "Pareto frontier" in report and rec["model"] in report
    assert any(p.name.startswith("efficiency-") and p.suffix == ".png" for p in inproc.results.iterdir())


def _record(model: str, curve: list[tuple[float, float]]) -> dict:
    return {"benchmark": "efficiency", "model": model, "budget": "micro", "dataset": "d", "tokenizer": "byte",
            "metrics": {"train_flops_per_token": 1.0, "final_ppl": curve[-1][1], "reached_target": 0.0},
            "protocol": {"curve": [{"train_flops": x, "ppl": y, "tokens": x, "step": i, "train_wall_s": 0.0}
                                   for i, (x, y) in enumerate(curve)]}}


def test_the_session_frontier_runs_across_models(tmp_path):
    """A cheap model that plateaus and a costly one that keeps improving: the frontier starts on the first and
    hands over to the second, and the report says so in order of FLOPs."""
    cheap = _record("cheap", [(1e3, 20.0), (1e4, 10.0), (1e5, 9.0), (1e6, 8.9)])
    costly = _record("costly", [(1e4, 30.0), (1e5, 8.0), (1e6, 5.0)])
    md, plots = efficiency_md([cheap, costly], tmp_path)
    line = next(x for x in md if x.startswith("Pareto frontier"))
    assert line.index("cheap (micro)") < line.index("costly (micro)")
    assert "not reached" in "\n".join(md) and os.path.getsize(plots["d/byte"]) > 5000
