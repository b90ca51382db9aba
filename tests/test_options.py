"""Options and outcomes through the plugin, in-process (``pytester``): every bad value is one usage line before
anything runs; outcomes map to record statuses."""
import json

import pytest

from harness.options import OptionsError, parse_options
from harness.results.records import read_records

USAGE = pytest.ExitCode.USAGE_ERROR


@pytest.mark.parametrize(
    "args,message",
    [
        (["--models", "nosuchmodel"], "unknown model 'nosuchmodel'; valid models:"),
        (["--datasets", "nosuchdata"], "unknown dataset 'nosuchdata'"),
        (["--tokenizer", "nosuchtok"], "unknown tokenizer 'nosuchtok'"),
        (["--budget", "huge"], "unknown budget 'huge'; valid budgets: micro, smoke, small, full"),
        (["--seeds", "x"], "--seeds 'x': expected integers"),
        (["--bits", "int5"], "unknown bits int5"),
        (["--device", "tpu"], "valid devices: auto, cpu, cuda"),
        (["--seq-lens", "1"], "give sequence lengths >= 2"),
        (["--seq-lens", "500000", "--budget", "micro"], "--seq-lens 500000: one batch (1 x 500,000 = 500,000 "
                                                         "tokens) exceeds the training budget of 32,768 tokens"),
        (["-m", "nosuchmarker"], "'nosuchmarker' is no marker; benchmark markers: perplexity"),
        (["-m", "perplexity and longcontxt"], "'longcontxt' is no marker"),
        (["--models", "tests.toys:smoke_only_spec", "--budget", "small"],
         "model toy-smoke-only has no size preset for budget 'small' (it has: smoke)"),
    ],
)
def test_bad_options_are_one_usage_line_before_anything_runs(inproc, args, message):
    result = inproc.runpytest("--results-dir", str(inproc.results), *args)
    assert result.ret == USAGE, result.stdout.str() + result.stderr.str()
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and message in errors[0], result.errlines
    assert not inproc.results.exists()


def test_device_cuda_without_cuda_is_a_usage_error(inproc):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is what is under test")
    result = inproc.runpytest("--device", "cuda")
    assert result.ret == USAGE and "sees no CUDA device here; use --device cpu" in result.stderr.str()


def test_a_real_marker_that_selects_nothing_exits_0_and_says_so(inproc):
    inproc.makepyfile("def test_other():\n    pass\n")
    result = inproc.runpytest("-m", "longcontext", "--results-dir", str(inproc.results))
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*no benchmark matches this selection (-m 'longcontext')*"])


def test_unknown_model_lists_valid_models():
    with pytest.raises(OptionsError) as exc:
        parse_options(models="nosuchmodel")
    assert all(name in str(exc.value) for name in ("transformer", "llama", "mamba", "resnet-bk"))


def test_seq_lens_default_to_the_budget_length_and_pin_the_axis():
    opts = parse_options(models="transformer", budget="micro")
    assert opts.seq_lens is None and opts.axis_values()["seq_len"] == [64]
    assert parse_options(seq_lens="128,256").axis_values()["seq_len"] == [128, 256]


def test_outcomes_become_record_statuses(inproc):
    """XPASS is ``xpassed`` (not xfailed); a setup error's reason is its message; a cell no target applies to
    fails, naming the targets file."""
    inproc.makepyfile(
        """
        import pytest
        from harness.measure.result import Result

        @pytest.fixture
        def broken():
            raise RuntimeError("the data folder is gone")

        @pytest.mark.perplexity
        @pytest.mark.xfail(reason="expected to fail")
        def test_xpass(bench):
            pass

        @pytest.mark.perplexity
        def test_setup_error(bench, broken):
            pass

        @pytest.mark.perplexity
        def test_no_target(bench):
            bench.finalize(Result(metrics={"something": 1.0}))
        """
    )
    result = inproc.runpytest("--results-dir", str(inproc.results), "-p", "no:randomly")
    recs = {r["test_id"].rsplit("::", 1)[1]: r for r in read_records(inproc.results / "records.jsonl")}
    assert recs["test_xpass"]["status"] == "xpassed"
    assert recs["test_setup_error"]["status"] == "error"
    assert recs["test_setup_error"]["reason"] == "RuntimeError: the data folder is gone"
    assert recs["test_no_target"]["status"] == "failed"
    assert recs["test_no_target"]["reason"].startswith("no target in fixtures/targets/perplexity.toml applies to")
    result.assert_outcomes(failed=1, errors=1, xpassed=1)


def test_modified_models_never_leak_into_other_tests(inproc):
    """Two tests share one trained cell; the first ruins its weights in place (as quantization would). The second
    must still get the trained weights: every provision is a private copy."""
    inproc.makepyfile(
        """
        import pytest
        import torch

        @pytest.mark.perplexity
        @pytest.mark.parametrize("order", [0, 1, 2])
        def test_modify_then_check(cell, provision, order):
            module = provision(cell).module
            params = list(module.parameters())
            assert any(bool(p.abs().sum() > 0) for p in params), "weights were changed by another test"
            with torch.no_grad():
                for p in params:
                    p.zero_()
        """
    )
    result = inproc.runpytest("--results-dir", str(inproc.results), "--models", "tests.toys:causal_spec",
                              "--budget", "micro", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    sources = [r["train"]["source"] for r in read_records(inproc.results / "records.jsonl")]
    assert sources[0] in ("trained", "cache") and sources[1:] == ["memo", "memo"]


def test_seq_lens_trains_and_evaluates_at_that_length(tmp_path):
    """Through the real benchmark, as a user runs it (a subprocess: ``benches/`` registers torch ops on import)."""
    from tests.helpers import run_benches

    proc = run_benches(tmp_path / "r", tmp_path / "c", "-m", "perplexity", "--seq-lens", "256", "--budget", "micro",
                       "--models", "tests.toys:causal_spec")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (rec,) = read_records(tmp_path / "r" / "records.jsonl")
    assert rec["seq_len"] == 256 and "seq_len=256" in rec["cell_id"]
    assert rec["protocol"]["train"]["seq_len"] == 256 and rec["protocol"]["window"] == 256
    # the same tokens per optimizer step as at the budget's own length (64 x 8 at micro): the batch shrank
    assert rec["protocol"]["train"]["batch_size"] * 256 == 64 * 8
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["records"][0]["seq_len"] == 256
