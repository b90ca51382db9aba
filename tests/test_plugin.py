"""The plugin as a user meets it: `pytest benches ...` in a subprocess."""
import json
import math
import subprocess
import sys

import pytest

from harness.results.records import comparable, read_records
from tests.helpers import REPO, TOY, bench_env, run_benches

REQUIRED_FIELDS = {
    "schema_version", "benchmark", "cell_id", "model", "dataset", "tokenizer", "bits", "seq_len", "seed", "metrics",
    "protocol", "config_hash", "params", "status", "leak", "environment", "started_at", "finished_at", "train",
}


def test_explicit_dataset_missing_is_an_error_naming_the_files(inproc, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = inproc.runpytest("--datasets", "wikitext-2", "--data-dir", str(empty))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "wikitext-2" in result.stderr.str() and "train" in result.stderr.str()


def test_benches_run_from_another_folder_with_a_real_model(tmp_path):
    """After ``pip install -e .`` the plugin comes from its entry point: ``pytest <repo>/benches`` works from any
    folder, and a real registered model goes through the perplexity benchmark at the micro budget."""
    cmd = [sys.executable, "-m", "pytest", str(REPO / "benches"), "-m", "perplexity", "--models", "transformer",
           "--budget", "micro", "-q", "-p", "no:cacheprovider", "--results-dir", str(tmp_path / "r"),
           "--cache-dir", str(tmp_path / "c")]
    env = bench_env()
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (rec,) = read_records(tmp_path / "r" / "records.jsonl")
    assert rec["model"] == "transformer" and rec["status"] == "passed" and rec["train"]["source"] == "trained"
    assert rec["metrics"]["ppl_over_floor"] <= rec["protocol"]["targets"]["ppl_over_floor"]["max"]


def test_leaky_model_declared_causal_fails_and_declared_bidirectional_xfails(tmp_path):
    proc = run_benches(tmp_path / "r", tmp_path / "c", "-m", "perplexity",
                       "--models", "tests.toys:leaky_declared_causal,tests.toys:leaky_declared_bidir")
    recs = {r["model"]: r for r in read_records(tmp_path / "r" / "records.jsonl")}
    assert proc.returncode == 1
    causal, bidir = recs["tests.toys:leaky_declared_causal"], recs["tests.toys:leaky_declared_bidir"]
    assert causal["status"] == bidir["status"] == "leak" and causal["leak"] and bidir["leak"]
    assert "leaks future tokens (freshly built, before training): logits at position" in causal["reason"]
    assert "1 failed" in proc.stdout and "1 xfailed" in proc.stdout


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("serial")
    proc = run_benches(base / "r", base / "c", "-m", "perplexity", "--models", TOY, "--seeds", "0,1,2")
    return base, proc


def test_records_have_every_field(serial_run):
    base, proc = serial_run
    recs = read_records(base / "r" / "records.jsonl")
    assert len(recs) == 3, proc.stdout
    for r in recs:
        assert REQUIRED_FIELDS <= set(r), REQUIRED_FIELDS - set(r)
        assert r["protocol"]["window"] == r["seq_len"] == r["protocol"]["train"]["seq_len"]
        assert r["protocol"]["split"] == "test" and r["cell_id"].startswith("perplexity|model=" + TOY)
        assert r["leak"] is False and r["params"]["total"] > 0 and r["config_hash"]
        assert r["environment"]["torch"] and r["environment"]["device"] in ("cpu", "cuda")
        assert r["protocol"]["device"] and r["train"]["steps"] > 0
    summary = json.loads((base / "r" / "summary.json").read_text())
    assert summary["n_records"] == 3
    assert "| perplexity |" in (base / "r" / "summary.md").read_text()


def test_xdist_gives_the_same_records_as_a_serial_run(serial_run, tmp_path):
    base, _ = serial_run
    proc = run_benches(tmp_path / "r", tmp_path / "c", "-n", "2", "-m", "perplexity", "--models", TOY,
                       "--seeds", "0,1,2")
    assert sorted((tmp_path / "r").glob("records.gw*.jsonl")), "each worker writes its own file"
    par = sorted(read_records(tmp_path / "r" / "records.jsonl"), key=lambda r: r["test_id"])
    ser = sorted(read_records(base / "r" / "records.jsonl"), key=lambda r: r["test_id"])
    assert len(par) == len(ser) == 3, proc.stdout
    for a, b in zip(ser, par):
        a, b = comparable(a), comparable(b)
        ma, mb = a.pop("metrics"), b.pop("metrics")
        la, lb = a.pop("train")["losses"], b.pop("train")["losses"]
        a.pop("reason"), b.pop("reason")
        # Workers use 1 thread each and the serial run 2: float32 reductions may differ in the last bits.
        assert ma.keys() == mb.keys()
        for k in ma:
            if isinstance(ma[k], float):
                assert math.isclose(ma[k], mb[k], rel_tol=1e-4), k
        assert max(abs(x - y) for x, y in zip(la, lb)) < 1e-3
        assert a["status"] == b["status"]


def test_cached_weights_are_reused(serial_run):
    base, _ = serial_run
    proc = run_benches(base / "r2", base / "c", "-m", "perplexity", "--models", TOY, "--seeds", "0")
    (rec,) = read_records(base / "r2" / "records.jsonl")
    assert rec["train"]["cached"] is True, proc.stdout
    first = [r for r in read_records(base / "r" / "records.jsonl") if r["seed"] == 0][0]
    assert rec["metrics"]["ppl"] == first["metrics"]["ppl"]


def test_gpu_flag_without_cuda_skips_gpu_tests_with_one_reason(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the skip path is what is under test")
    proc = run_benches(tmp_path / "r", tmp_path / "c", "--gpu", "-rs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" not in proc.stdout.splitlines()[-1]  # --gpu selected only gpu tests, and none could run
    reasons = {r["reason"] for r in read_records(tmp_path / "r" / "records.jsonl")}
    assert len(reasons) == 1 and "needs CUDA" in reasons.pop()


def test_allure_results_carry_the_record(tmp_path):
    proc = run_benches(tmp_path / "r", tmp_path / "c", "-m", "perplexity", "--models", TOY,
                       "--alluredir", str(tmp_path / "allure"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    attachments = [p for p in (tmp_path / "allure").iterdir() if p.name.endswith("-attachment.json")]
    assert attachments and json.loads(attachments[0].read_text())["model"] == TOY
