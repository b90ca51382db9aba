"""The quantization benchmark through pytest, on a toy at the micro budget: every width reuses one training run,
records carry scope, path and packed size, and the plots are drawn."""
import json

import pytest

from harness.results.records import read_records
from tests.helpers import TOY, run_benches


@pytest.fixture(scope="module")
def quant_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("quant")
    proc = run_benches(base / "r", base / "c", "-m", "quantization", "--models", TOY, "--budget", "micro",
                       "--bits", "fp32,bf16,int8,int4,int2", "--quant-include", "embeddings,head",
                       "-p", "no:randomly")
    return base, proc


def test_every_width_is_a_cell_on_one_training_run(quant_run):
    base, proc = quant_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = {r["bits"]: r for r in read_records(base / "r" / "records.jsonl")}
    assert set(recs) == {"fp32", "bf16", "int8", "int4", "int2"}
    assert len({r["config_hash"] for r in recs.values()}) == 1  # one set of trained weights
    assert sorted(r["train"]["source"] for r in recs.values()).count("trained") == 1
    fp32 = recs["fp32"]["metrics"]["ppl"]
    for bits, r in recs.items():
        q = r["protocol"]["quantization"]
        assert r["metrics"]["fp32_ppl"] == fp32 and "bits=" + bits in r["cell_id"]
        assert r["protocol"]["targets_version"] >= 1 and "degradation_pct" in r["protocol"]["targets"] or bits == "fp32"
        assert q["bits"] == bits and q["params_by_width"] and q["packed_bytes"] == r["metrics"]["packed_bytes"]
    # packed sizes fall with the width (codes at their width, plus scales and what stayed fp32)
    sizes = [recs[b]["metrics"]["packed_bytes"] for b in ("fp32", "bf16", "int8", "int4", "int2")]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 2 * sizes[-1]
    assert recs["int4"]["protocol"]["quantization"]["path"].startswith(("torchao", "lmbench-rtn"))
    assert all(recs[b]["metrics"]["quantized_fraction"] > 0.5 for b in ("bf16", "int8", "int4", "int2"))
    summary = json.loads((base / "r" / "summary.json").read_text())
    assert summary["plots"] == ["plots/quantization-synthetic-markov.png"]
    assert (base / "r" / "plots" / "quantization-synthetic-markov.png").stat().st_size > 10_000


def test_a_width_that_quantizes_nothing_fails(tmp_path):
    """The toy's only weight matrices are its embedding and head: in the default scope int8 touches nothing, and
    the cell must say so instead of reporting an "int8" perplexity."""
    proc = run_benches(tmp_path / "r", tmp_path / "c", "-m", "quantization", "--models", TOY, "--budget", "micro",
                       "--bits", "int8")
    (rec,) = read_records(tmp_path / "r" / "records.jsonl")
    assert proc.returncode == 1 and rec["status"] == "failed"
    assert "quantized_fraction = 0, target >= 0.5" in rec["reason"]


def test_quantization_options_join_the_cell_id(tmp_path):
    proc = run_benches(tmp_path / "r", tmp_path / "c", "-m", "quantization", "--models", TOY, "--budget", "micro",
                       "--bits", "int4", "--group-size", "16", "--act-bits", "8",
                       "--quant-include", "embeddings,head")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (rec,) = read_records(tmp_path / "r" / "records.jsonl")
    assert rec["cell_id"].endswith("act_bits=8|group_size=16|quant_include=embeddings,head")
    q = rec["protocol"]["quantization"]
    assert q["group_size"] == 16 and q["act_bits"] == 8


@pytest.mark.parametrize("args,message", [(["--act-bits", "4"], "--act-bits 4: only 8"),
                                          (["--group-size", "0"], "--group-size '0': expected a positive integer"),
                                          (["--quant-include", "norms"], "valid parts: embeddings, head")])
def test_bad_quantization_options(inproc, args, message):
    result = inproc.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR and message in result.stderr.str()
