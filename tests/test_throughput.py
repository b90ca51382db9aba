"""Throughput (``harness.measure.timing``, ``throughput``, ``overhead``): the side-by-side timer can tell a slowed
model from its original, ratios are paired per round, sweeps and crossovers are right, MFU above 1 is refused, the
evaluation path's overhead is measured against real alternatives, and the benchmark runs in-process at the micro
budget with its records, plot and report.

Speed is only ever asserted as a ratio of two things timed in the same rounds, with margins far wider than a busy
2-core machine's noise (a 4x slower model must measure at least 1.5x slower); absolute rates never are.
"""
from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.measure import overhead, throughput
from harness.measure.hardware import MatmulProbe, Peak, best_peak, table_peak
from harness.measure.result import Result
from harness.measure.timing import Timing, speed_ratio, time_side_by_side
from harness.options import parse_options
from harness.results.records import read_records
from harness.session import Session
from tests.helpers import DATA_DIR, REPO, TOY

SLOW = "tests.toys:slow_spec"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here times or sizes on one thread (``one_thread`` in conftest says why)."""


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    tmp = tmp_path_factory.mktemp("tp")
    return Session(parse_options(models=f"{TOY},{SLOW}", budget="micro", cache_dir=tmp / "c",
                                 results_dir=tmp / "r", data_dir=DATA_DIR))


def _fresh(session: Session, model: str):
    (cell,) = [c for c in session.cells("throughput", ("model", "dataset", "seed")) if c.model == model]
    return session.fresh(cell)


# ----------------------------------------------------------------------------------------------- the timer


def _timing(times: list[float]) -> Timing:
    return Timing(label="x", times=times, number=1, threads=1, warmup=1)


def test_speed_ratio_pairs_rounds():
    """A burst of load in round 2 hits both variants: the per-round ratio stays 2 with no spread at all."""
    fast, slow = _timing([1.0, 10.0, 1.0, 1.1]), _timing([2.0, 20.0, 2.0, 2.2])
    r = speed_ratio(fast, slow)
    assert r.median == pytest.approx(2.0) and r.iqr == pytest.approx(0.0)
    with pytest.raises(ValueError, match="same rounds"):
        speed_ratio(fast, _timing([1.0]))


def test_rates_take_quartiles_from_the_opposite_time_quartiles():
    t = _timing([1.0, 2.0, 4.0])
    rate = t.rate(100.0)
    assert rate.median == pytest.approx(50.0)
    assert rate.q1 == pytest.approx(100.0 / t.q3) and rate.q3 == pytest.approx(100.0 / t.q1) and rate.q1 < rate.q3


def test_a_slowed_copy_of_a_model_is_measured_slower(session):
    """The same toy, doing its work 4 times per call, timed in the same interleaved rounds as the original: its
    training and prefill rates are measured well below the original's, at every length (and each of the two sides is
    the real training step: AdamW state appears)."""
    fm, slow = _fresh(session, TOY), _fresh(session, SLOW)
    sweep = throughput.Sweep(seq_lens=(32, 64), length_tokens=256, batch_tokens=(), base_seq_len=32, rounds=5,
                             min_block_s=0.02)
    result = throughput.measure_vs(slow, fm, sweep)
    assert result.status is None and result.protocol["reference"] == TOY
    for n in (32, 64):
        assert result.metrics[f"L{n}_train_ratio"] < 1 / 1.5, result.metrics
        assert result.metrics[f"L{n}_prefill_ratio"] < 1 / 1.5, result.metrics
    rows = [r for r in result.protocol["points"] if "error" not in r]
    assert all(r["train_ratio_q1"] <= r["train_ratio"] <= r["train_ratio_q3"] for r in rows)


def test_rounds_grow_while_the_spread_is_wide():
    """A variant whose time alternates 1x / 3x never gets under a 10% IQR: more rounds are run, up to the cap;
    a steady one stops at the minimum."""
    calls = {"n": 0}

    def jumpy() -> None:
        calls["n"] += 1
        torch.ones(20_000 * (1 if calls["n"] % 2 else 6)).sum()

    t = time_side_by_side({"jumpy": jumpy}, rounds=3, max_rounds=7, min_block_s=0.0, max_number=1)
    assert len(t["jumpy"].times) == 7
    steady = time_side_by_side({"s": lambda: None}, rounds=3, max_rounds=7, min_block_s=0.01, target_rel_iqr=10.0)
    assert len(steady["s"].times) == 3 and steady["s"].number > 1  # a fast callable is called many times per round


# ------------------------------------------------------------------------------------------ sweeps, crossover


@settings(max_examples=50, deadline=None)
@given(base=st.sampled_from([16, 32, 64, 128]), tokens=st.integers(1, 4096),
       lens=st.lists(st.sampled_from([16, 32, 64, 128, 256]), max_size=4),
       batches=st.lists(st.integers(1, 8192), max_size=4))
def test_sweep_points_start_at_the_headline_and_never_repeat(base, tokens, lens, batches):
    sweep = throughput.Sweep(seq_lens=tuple(lens), length_tokens=tokens, batch_tokens=tuple(batches),
                             base_seq_len=base)
    pts = sweep.points()
    assert pts[0] == sweep.base == (base, max(1, tokens // base))
    assert len(pts) == len(set(pts)) and all(b >= 1 for _, b in pts)
    assert {n for n, _ in pts} == {base, *lens}


@settings(max_examples=50, deadline=None)
@given(cross=st.floats(20.0, 4000.0), slope=st.floats(0.2, 2.0).map(lambda s: s * (1 if s > 1.1 else -1)))
def test_crossover_of_a_power_law_is_found_exactly(cross, slope):
    """ratio(n) = (n / n*)^a crosses 1 at n* exactly; interpolating log ratio against log length is exact for it."""
    lengths = [16, 64, 256, 1024, 4096]
    ratios = [(n / cross) ** slope for n in lengths]
    assert throughput.crossover(lengths, ratios) == pytest.approx(cross, rel=1e-9)


def test_no_crossover_when_one_side_stays_ahead():
    assert throughput.crossover([128, 256, 512], [0.5, 0.7, 0.9]) is None
    assert throughput.crossover([128, 256], [2.0, 1.5]) is None


def test_sweeps_scale_with_the_budget_and_seq_lens_replace_the_lengths():
    micro, smoke = throughput.sweep_for("micro", "cpu", 64, 512), throughput.sweep_for("smoke", "cpu", 128, 2048)
    assert max(micro.seq_lens) < max(smoke.seq_lens) and micro.rounds <= smoke.rounds
    assert throughput.sweep_for("smoke", "cpu", 128, 2048, [96]).seq_lens == (96,)
    gpu = throughput.sweep_for("smoke", "cuda", 512, 65_536)
    assert gpu.batch_tokens == (65_536, 131_072, 262_144) and max(gpu.seq_lens) == 8192  # the PSANN plan's sweep


# ------------------------------------------------------------------------------------------------ MFU, peaks


def test_mfu_above_one_is_refused_as_impossible(session, monkeypatch):
    """A peak 1,000 times too low (a wrong table row) makes every MFU exceed 1: the measurement still reports the
    numbers, and the one refusal of impossible values turns the record into ``impossible``, never a pass."""
    fm = _fresh(session, TOY)
    monkeypatch.setattr(throughput, "device_peak", lambda device, dtype: Peak(1e3, "fp32", "datasheet: wrong row"))
    sweep = throughput.Sweep(seq_lens=(32,), length_tokens=128, batch_tokens=(), base_seq_len=32, rounds=2,
                             min_block_s=0.0)
    result = throughput.measure(fm, sweep)
    assert result.metrics["train_mfu"] > 1 and result.metrics["L32_B4_prefill_mfu"] > 1
    record, verdict = session.finalize(fm.cell, result)
    assert verdict.outcome == "failed" and record.status == "impossible"
    assert "above 1" in record.reason and "mfu" in record.reason


def test_finalize_refuses_an_mfu_above_one_at_any_sweep_point(session):
    (cell,) = [c for c in session.cells("throughput", ("model", "dataset", "seed")) if c.model == TOY]
    ok = {"train_over_prefill": 0.4, "train_mfu": 0.2, "L64_B8_train_mfu": 0.3}
    assert session.finalize(cell, Result(metrics=ok))[1].outcome == "passed"
    record, verdict = session.finalize(cell, Result(metrics=ok | {"L128_B4_prefill_mfu": 1.02}))
    assert record.status == "impossible" and "L128_B4_prefill_mfu" in record.reason


def test_peaks_from_the_table_and_measured_ones():
    assert table_peak("NVIDIA H100 80GB HBM3", "bf16").flops_per_s == pytest.approx(989.4e12)
    assert table_peak("NVIDIA H100 PCIe", "fp32").flops_per_s == pytest.approx(51.2e12)  # the specific row wins
    assert table_peak("Some Unknown GPU", "fp32") is None and table_peak("Tesla T4", "tf32") is None
    probe = MatmulProbe("cpu", torch.float32, n=64)
    assert torch.allclose(probe(), probe.a @ probe.b) and probe.flops == 2 * 64 ** 3
    peak = probe.peak([0.5, 0.25, 1.0], threads=1)
    assert peak.flops_per_s == pytest.approx(probe.flops / 0.25) and peak.source.startswith("measured")
    assert best_peak([peak, Peak(1.0, "fp32", "x")]) is peak


# --------------------------------------------------------------------------------------------------- overhead


def _float64_copy_nll(model, ids, window, stride=None, batch_size=16, device="cpu"):
    """The evaluation path the issue measured at 0.24 of a bare loop: every logit copied to float64 first."""
    import numpy as np

    ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids_t) // window, batch_size):
            x = ids_t[i * window : (i + batch_size) * window].view(-1, window)
            logp = torch.log_softmax(model(x).double(), dim=-1)[:, :-1]
            total += float(-logp.gather(-1, x[:, 1:].unsqueeze(-1)).sum())
            count += x[:, 1:].numel()
    return total, count


def test_overhead_tells_the_float64_copy_from_the_evaluation_path(session, monkeypatch):
    """Same toy, same windows, a vocabulary large enough for the logits to matter: the evaluation path stays close
    to the exp floor (model(x) + one exp per logit) and keeps up with model(x) + cross_entropy; the old float64 copy,
    timed the same way, falls far behind both."""
    fm = _fresh(session, TOY)
    real = overhead.measure_overhead(fm, 8192, 32, 16, rounds=5, min_block_s=0.05)
    monkeypatch.setattr(overhead, "sliding_window_nll", _float64_copy_nll)
    old = overhead.measure_overhead(fm, 8192, 32, 16, rounds=5, min_block_s=0.05)
    assert real.target_section == "overhead-v8192" and real.protocol["scored_per_call"] == 16 * 31
    # measured on a busy 2-core machine: real 0.8-1.0 of the floor, the float64 copy 0.24 (a 3-4x separation)
    assert old.metrics["overhead_vs_floor"] < 0.5, old.metrics
    assert real.metrics["overhead_vs_floor"] > 2 * old.metrics["overhead_vs_floor"], (old.metrics, real.metrics)
    assert old.metrics["overhead_vs_library"] < real.metrics["overhead_vs_library"]
    for name in ("overhead_ratio", "overhead_vs_floor", "overhead_vs_library", "floor_ratio", "library_ratio"):
        m = real.metrics
        assert m[f"{name}_q1"] <= m[name] <= m[f"{name}_q3"] and math.isfinite(m[name])


# ------------------------------------------------------------------------------------------- in-process bench


def test_throughput_benchmark_in_process_at_micro(inproc):
    """`pytest benches -m throughput` at the micro budget on the toy: the sweep's records carry median and IQR
    tokens/s, FLOPs per token and MFU against a named peak; the plot and throughput.md are written; the GPU
    variants are skipped with their reason (no CUDA here) and never counted as passes."""
    result = inproc.runpytest(str(REPO / "benches" / "test_throughput.py"), "-m", "throughput", "--models", TOY,
                              "--budget", "micro", "--results-dir", str(inproc.results), "-k", "not overhead",
                              "-p", "no:randomly", "-rs")
    recs = {r["cell_id"].split("|")[0]: r for r in read_records(inproc.results / "records.jsonl")}
    main = recs["throughput"]
    assert main["status"] == "passed", main.get("reason")
    m, p = main["metrics"], main["protocol"]
    assert m["train_q1_tokens_per_s"] <= m["train_tokens_per_s"] <= m["train_q3_tokens_per_s"]
    assert m["prefill_tokens_per_s"] > m["train_tokens_per_s"] > 0
    assert m["train_flops_per_token"] == 3 * m["fwd_flops_per_token"] > 0  # toy: every product's two gradients
    assert 0 < m["train_mfu"] < 1 and p["peak"]["source"].startswith("measured")
    assert p["timer"].startswith("torch.utils.benchmark.Timer") and len(p["points"]) >= 3
    assert all(pt["train_timing"]["rounds"] >= 3 for pt in p["points"])
    assert "no incremental cache" in main["notes"]  # decode is measured only where a cache exists
    assert main["protocol"]["targets"] == {"train_over_prefill": {"max": 1.0}}
    plot = main["artefacts"]["throughput_plot"]
    assert plot.endswith(".png") and os.path.getsize(plot) > 5000
    vs = recs["throughput/speed_vs_transformer"]
    assert vs["status"] == "passed" and vs["protocol"]["reference"] == "transformer"
    assert all(f"L{n}_train_ratio" in vs["metrics"] for n in vs["protocol"]["sweep"]["seq_lens"])
    gpu = [r for k, r in recs.items() if k.endswith("_gpu")]
    assert gpu and all(r["status"] == "skipped" and "CUDA" in r["reason"] for r in gpu)
    report = (inproc.results / "throughput.md").read_text()
    assert "Tokens/s at the headline point" in report and "over the Transformer's" in report
    result.assert_outcomes(passed=2, skipped=len(gpu))
