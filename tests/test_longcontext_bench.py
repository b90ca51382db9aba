"""The long-context and synthetic benchmarks as a user runs them (``pytest benches …`` in a subprocess, micro budget,
toy models): injected NaN, out-of-memory, timeouts, the claim of stability, records, plots and ``--gpu``."""
import json
import math
import re

import pytest

from harness.results.records import read_records
from tests import toys
from tests.helpers import TOY, run_benches

NAN, NAN_CLAIMED, OOM, SLOW = ("tests.toys:nan_spec", "tests.toys:nan_claimed_spec", "tests.toys:oom_spec",
                               "tests.toys:sleepy_spec")


def _by_id(results):
    return {r["cell_id"]: r for r in read_records(results / "records.jsonl")}


def _one(recs, *parts):
    (rec,) = [r for cid, r in recs.items() if all(p in cid for p in parts)]
    return rec


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("nan")
    proc = run_benches(base / "r", base / "c", "-m", "longcontext", "--budget", "micro",
                       "--models", f"{NAN},{TOY},{NAN_CLAIMED}", "--alluredir", str(base / "allure"), "-rsxX")
    return base, proc


def test_an_injected_nan_is_recorded_as_divergence_at_that_step_and_the_run_goes_on(nan_run):
    base, proc = nan_run
    recs = _by_id(base / "r")
    assert len(recs) == 3 * 2 * 2, proc.stdout  # 3 models × 2 lengths × (stability, extrapolation): nothing lost
    for length in (64, 256):
        rec = _one(recs, "longcontext/stability", f"model={NAN}|", f"seq_len={length}|")
        assert rec["status"] == "diverged" and f"at step {toys.NAN_STEP}" in rec["reason"], rec["reason"]
        assert rec["metrics"]["diverged_step"] == toys.NAN_STEP and rec["metrics"]["nonfinite_losses"] == 1
        losses = rec["train"]["losses"]  # the curve up to and including the NaN step is kept (strict JSON: NaN is null)
        assert len(losses) == toys.NAN_STEP + 1 and losses[-1] is None and all(map(math.isfinite, losses[:-1]))
        assert "recorded, not failed" in rec["reason"]
        ext = _one(recs, "longcontext/extrapolation", f"model={NAN}|", f"seq_len={length}|")
        assert ext["status"] == "diverged"
        ok = _one(recs, "longcontext/stability", f"model={TOY}|", f"seq_len={length}|")
        assert ok["status"] == "passed" and ok["metrics"]["final_over_first_loss"] < 0.99
        assert ok["metrics"]["nonfinite_losses"] == 0 and ok["metrics"]["heldout_loss"] > 0
        assert ok["metrics"]["peak_mem_mb"] > 0 and ok["metrics"]["step_time_s"] > 0
    # Divergence of a model without a stability claim is recorded (xfail); of one that claims it, a failure.
    claimed = _one(recs, "longcontext/stability", f"model={NAN_CLAIMED}|", "seq_len=64|")
    assert claimed["status"] == "diverged"
    assert proc.returncode == 1 and "4 failed" in proc.stdout and "4 xfailed" in proc.stdout, proc.stdout


def test_extrapolation_records_ratios_and_position_buckets(nan_run):
    base, _ = nan_run
    rec = _one(_by_id(base / "r"), "longcontext/extrapolation", f"model={TOY}|", "seq_len=64|")
    m = rec["metrics"]
    assert rec["status"] == "passed" and {"ppl_x1", "ppl_x2", "ppl_x4", "ppl_x8"} <= set(m)
    assert m["ppl_x8_over_x1"] == pytest.approx(m["ppl_x8"] / m["ppl_x1"])
    assert set(m["position_nll"]) == {"x1", "x2", "x4", "x8"} and {"32-63", "64"} <= set(m["position_nll"]["x1"])
    assert m["ppl_over_unigram"] < 1.0 and rec["leak"] is False


def test_plots_are_saved_beside_the_records_and_attached(nan_run):
    base, _ = nan_run
    recs = _by_id(base / "r")
    rec = _one(recs, "longcontext/stability", f"model={TOY}|", "seq_len=256|")
    for name in ("training_curves", "max_stable_length"):
        path = rec["artefacts"][name]
        assert path.startswith(str(base / "r" / "plots")) and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    pngs = [p for p in (base / "allure").iterdir() if p.name.endswith("-attachment.png")]
    assert pngs, "plots are attached to the Allure entries"
    summary = (base / "r" / "summary.md").read_text()
    assert "maximum stable length per model" in summary
    stable = {r["model"]: r for r in json.loads((base / "r" / "summary.json").read_text())["max_stable_length"]}
    assert stable[TOY]["max_stable_len"] == 256 and stable[NAN]["max_stable_len"] is None
    assert stable[NAN]["first_unstable"]["status"] == "diverged"


def test_out_of_memory_is_recorded_and_longer_lengths_are_skipped_with_that_reason(tmp_path):
    proc = run_benches(tmp_path / "r", tmp_path / "c", "-m", "longcontext", "--budget", "micro", "--models", OOM,
                       "--seq-lens", "64,128,256", "-rsxX")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = _by_id(tmp_path / "r")
    assert _one(recs, "stability", "seq_len=64|")["status"] == "passed"
    oom = _one(recs, "stability", f"seq_len={toys.OOM_FROM}|")
    assert oom["status"] == "oom" and "out of memory in training step 0" in oom["reason"]
    longer = _one(recs, "stability", "seq_len=256|")
    assert longer["status"] == "skipped" and f"ran out of memory at seq_len {toys.OOM_FROM}" in longer["reason"]
    same = _one(recs, "extrapolation", f"seq_len={toys.OOM_FROM}|")
    assert same["status"] == "skipped" and "same training ran out of memory" in same["reason"]
    ext = _one(recs, "extrapolation", "seq_len=64|")  # evaluation at 2L ran out of memory: recorded, not lost
    assert ext["status"] == "passed" and "x2" in ext["protocol"]["not_evaluated"] and "ppl_x1" in ext["metrics"]


def test_a_cell_past_its_time_is_recorded_as_timeout_and_the_run_goes_on(tmp_path):
    proc = run_benches(tmp_path / "r", tmp_path / "c", "-m", "longcontext", "--budget", "micro",
                       "--models", f"{SLOW},{TOY}", "--seq-lens", "64", "--cell-timeout", "6", "-k", "stability")
    recs = _by_id(tmp_path / "r")
    slow = _one(recs, f"model={SLOW}|")
    assert slow["status"] == "timeout" and "ran out of time" in slow["reason"], proc.stdout
    # Stopped between steps (6 s against 64 steps of 0.2 s), the partial curve kept; the time also pays for the
    # cell's setup (data, memory probe), so on a very busy machine no step may have run at all.
    assert slow["train"]["steps"] < 64 and len(slow["train"]["losses"]) == slow["train"]["steps"]
    assert _one(recs, f"model={TOY}|")["status"] == "passed" and proc.returncode == 0


def test_bad_options_stop_before_anything_runs(inproc):
    from harness.options import OptionsError, parse_options

    for kwargs, expected in ((dict(cell_timeout="soon"), "--cell-timeout 'soon'"),
                             (dict(cell_timeout="-5"), "positive number of seconds"),
                             (dict(autocast="bf16", device="cpu"), "--autocast bf16 is for CUDA"),
                             (dict(autocast="fp8"), "--autocast 'fp8': valid: bf16"),
                             (dict(memory_tasks="mqar-v64-p40"), "pairs <= keys"),
                             (dict(memory_tasks="nosuch"), "unknown task 'nosuch'; valid tasks: induction-heads, mqar"),
                             (dict(memory_tasks="mqar", seq_lens="16"), "at least 32 tokens")):
        with pytest.raises(OptionsError, match=".*".join(map(re.escape, expected.split()))):
            parse_options(models="transformer", **kwargs)
    result = inproc.runpytest("-m", "synthetic or longcontext", "--memory-tasks", "mqar", "--seq-lens", "16",
                              "--results-dir", str(inproc.results))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [ln for ln in result.stderr.lines if ln.startswith("ERROR")]
    assert len(errors) == 1 and "--memory-tasks mqar needs sequences of at least 32 tokens" in errors[0]
    assert not inproc.results.exists()


def test_gpu_selects_the_long_context_benchmark_and_skips_it_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the skip path is what is under test")
    proc = run_benches(tmp_path / "r", tmp_path / "c", "-m", "longcontext", "--gpu", "--budget", "micro",
                       "--models", TOY, "-rs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = read_records(tmp_path / "r" / "records.jsonl")
    assert len(recs) == 4 and {r["status"] for r in recs} == {"skipped"}
    assert len({r["reason"] for r in recs}) == 1 and "needs CUDA" in recs[0]["reason"]


def test_synthetic_scores_an_oracle_perfectly_and_fails_a_model_that_ignores_context(tmp_path):
    proc = run_benches(tmp_path / "r", tmp_path / "c", "-m", "synthetic", "--budget", "micro",
                       "--models", "tests.toys:oracle_spec,tests.toys:unigram_spec", "--memory-tasks", "mqar,induction-heads")
    recs = _by_id(tmp_path / "r")
    assert len(recs) == 4, proc.stdout
    for task in ("mqar", "induction-heads"):
        oracle = _one(recs, "model=tests.toys:oracle_spec|", f"task={task}")
        assert oracle["status"] == "passed" and oracle["metrics"]["accuracy"] == 1.0, oracle["reason"]
        assert oracle["metrics"]["accuracy_x2"] == 1.0 and oracle["leak"] is False
        assert oracle["train"]["losses"] and oracle["metrics"]["best_lr"] in oracle["protocol"]["lrs"]
        blind = _one(recs, "model=tests.toys:unigram_spec|", f"task={task}")
        assert blind["status"] == "failed" and blind["metrics"]["accuracy"] < 2 * blind["metrics"]["chance"]
        assert "accuracy" in blind["reason"] and "synthetic.toml" in blind["reason"]
        assert blind["artefacts"]["accuracy_by_length"].endswith(f"synthetic-{task}.png")
    assert proc.returncode == 1
