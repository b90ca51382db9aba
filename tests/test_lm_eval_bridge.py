"""lm-evaluation-harness bridge: lm-eval, running a local task through ``LMBenchLM``, reproduces lmbench's numbers.

Each test defines a task twice, once as an lm-eval YAML (``dataset_path: json`` over a jsonl file, loaded with
``TaskManager(include_path=...)``) and once as an lmbench task file over the same file, and checks that lm-eval's
pipeline (its prompt rendering, its ``_encode_pair`` split, its metric code) gives the numbers lmbench's own
pipeline gives on the same seeded, randomly initialised model. Rolling perplexity is compared with lmbench's
``sliding_window_nll`` under the windowing the two share (module doc of harness.adapters.lm_eval).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'lm-eval==0.4.13')")

from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from harness.adapters.lm_eval import LMBenchLM  # noqa: E402
from harness.data import ByteTokenizer, DataContext  # noqa: E402
from harness.data.tokenizers import gpt2_files, load_gpt2  # noqa: E402
from harness.downstream import ScoringConfig, evaluate_task, load_task_file  # noqa: E402
from harness.measure.perplexity import sliding_window_nll  # noqa: E402
from harness.models import get_model_spec  # noqa: E402
from tests.helpers import DATA_DIR, REPO  # noqa: E402

QUESTIONS = [
    ("The capital of France is ", ["Paris", "Rome", "a small village by the sea"]),
    ("Q: What colour is the sky?\nA:", ["blue", "green", "red"]),
    ("2 + 2 =", ["4", "5", "22"]),
    ("She opened the door and saw  ", ["nothing", "a cat", "the garden, wet with rain"]),
    ("A long preamble that will not fit into the tiny model's context window at all, so the scorer must drop "
     "its oldest tokens from the left before it reads the answer. Answer:", ["yes", "no", "maybe"]),
    ("Colours: red, green,", ["blue", "yellow", "purple"]),
]


def _tiny_model(vocab_size: int, max_seq_len: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = get_model_spec("transformer")
    return spec.build(spec.config(vocab_size=vocab_size, max_seq_len=max_seq_len, budget="smoke")).eval()


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _lm_eval_yaml(folder: Path, name: str, data: Path, body: str) -> None:
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        f"  cache_dir: {folder / 'hf-cache'}\ntest_split: test\n{body}", encoding="utf-8")


def _run_lm_eval(lm: LMBenchLM, folder: Path, name: str) -> dict:
    tm = TaskManager(include_path=str(folder), include_defaults=False)
    return lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=tm, bootstrap_iters=0, log_samples=True)


@pytest.fixture(scope="module")
def gpt2():
    ctx = DataContext(DATA_DIR, Path("/nonexistent"))
    if gpt2_files(ctx) is None:
        pytest.skip(f"gpt2 tokenizer files not found under {DATA_DIR}")
    return load_gpt2(ctx)


def test_lmbench_is_in_lm_evals_model_registry():
    assert get_model("lmbench") is LMBenchLM
    assert get_model("dummy").__name__ == "DummyLM"  # lm-eval's own models stay reachable


@pytest.mark.parametrize("tokenizer", ["byte", "gpt2"])
def test_multiple_choice_accuracy_equals_lmbench(tmp_path, tokenizer, request):
    tok = ByteTokenizer() if tokenizer == "byte" else request.getfixturevalue("gpt2")
    rows = [{"question": q, "choices": c, "label": i % len(c)} for i, (q, c) in enumerate(QUESTIONS * 3)]
    data = _write_jsonl(tmp_path / "mc.jsonl", rows)
    _lm_eval_yaml(tmp_path, "lmb_mc", data,
                  'output_type: multiple_choice\ndoc_to_text: "{{question}}"\ndoc_to_choice: choices\n'
                  "doc_to_target: label\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "mc.yaml").write_text(
        'task: mine\noutput_type: multiple_choice\nsource: {local: {format: jsonl, files: [mc.jsonl]}}\n'
        'doc_to_text: "{{question}}"\ndoc_to_choice: choices\ndoc_to_target: label\nmetrics: [acc, acc_norm]\n')
    model = _tiny_model(tok.vocab_size, 24)
    lm = LMBenchLM(model=model, tokenizer=tok, max_length=24, batch_size=4)
    theirs = _run_lm_eval(lm, tmp_path, "lmb_mc")
    ours = evaluate_task(model, tok, load_task_file(tmp_path / "ours" / "mc.yaml")[0],
                         DataContext(tmp_path, tmp_path / "c"), ScoringConfig(max_len=24, batch_size=4))
    assert ours.protocol["n_truncated"] > 0  # the long preamble really was cut
    got = theirs["results"]["lmb_mc"]
    assert got["acc,none"] == pytest.approx(ours.metrics["acc"], abs=1e-12)
    assert got["acc_norm,none"] == pytest.approx(ours.metrics["acc_norm"], abs=1e-12)
    samples = sorted(theirs["samples"]["lmb_mc"], key=lambda s: s["doc_id"])
    for s, ex in zip(samples, ours.examples, strict=True):
        assert [a[0] for a in s["arguments"]] == [ex.context] * len(ex.choices)
        assert [ll for ll, _ in s["filtered_resps"]] == pytest.approx(ex.loglikelihoods, rel=1e-6, abs=1e-6)


def test_rolling_perplexity_equals_sliding_window_nll(tmp_path):
    """lm-eval's rolling windows with max_length L predict every token exactly once: the first window from the
    prefix token, later ones from the L tokens before them. On [prefix] + ids that is sliding_window_nll with
    window L + 1 and stride L, exactly when the document has <= L tokens or a multiple of L (otherwise lm-eval
    gives its last window more context)."""
    L = 16
    tok = ByteTokenizer()
    texts = ["short one", "exactly sixteen!", "x" * 5, ("forty-eight bytes of text, all of them ascii....")[:48]]
    assert [len(t) for t in texts] == [9, 16, 5, 48]
    data = _write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    _lm_eval_yaml(tmp_path, "lmb_roll", data,
                  'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\nmetric_list:\n'
                  "  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n")
    model = _tiny_model(256, L + 1)  # sliding windows read L + 1 tokens
    lm = LMBenchLM(model=model, tokenizer=tok, max_length=L)
    theirs = _run_lm_eval(lm, tmp_path, "lmb_roll")
    total_nll, total_bytes = 0.0, 0
    for s in sorted(theirs["samples"]["lmb_roll"], key=lambda s: s["doc_id"]):
        ids = [lm.prefix_token_id] + tok.encode(s["doc"]["text"]).tolist()
        nll, count = sliding_window_nll(model, ids, window=L + 1, stride=L, batch_size=4)
        assert count == len(ids) - 1
        assert -s["filtered_resps"][0] == pytest.approx(nll, rel=1e-6)
        total_nll, total_bytes = total_nll + nll, total_bytes + len(s["doc"]["text"].encode())
    got = theirs["results"]["lmb_roll"]["bits_per_byte,none"]
    assert got == pytest.approx(total_nll / total_bytes / math.log(2), rel=1e-6)


def test_generation_equals_lmbench_greedy(tmp_path):
    rows = [{"question": f"Question {i}: name a colour.\nAnswer:", "answers": ["blue"]} for i in range(4)]
    data = _write_jsonl(tmp_path / "gen.jsonl", rows)
    _lm_eval_yaml(tmp_path, "lmb_gen", data,
                  'output_type: generate_until\ndoc_to_text: "{{question}}"\ndoc_to_target: "{{answers[0]}}"\n'
                  'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 6\n  do_sample: false\n'
                  "metric_list:\n  - metric: exact_match\n")
    (tmp_path / "gen.yaml.ours").write_text(
        'task: mine\noutput_type: generate_until\nsource: {local: {format: jsonl, files: [gen.jsonl]}}\n'
        'doc_to_text: "{{question}}"\ndoc_to_target: "{{answers}}"\ngeneration: {until: ["\\n"], max_gen_toks: 6}\n')
    tok = ByteTokenizer()
    model = _tiny_model(256, 32, seed=3)
    theirs = _run_lm_eval(LMBenchLM(model=model, tokenizer=tok, max_length=32), tmp_path, "lmb_gen")
    ours = evaluate_task(model, tok, load_task_file(tmp_path / "gen.yaml.ours")[0], DataContext(tmp_path, tmp_path),
                         ScoringConfig(max_len=32))
    samples = sorted(theirs["samples"]["lmb_gen"], key=lambda s: s["doc_id"])
    assert [s["filtered_resps"][0] for s in samples] == [e.prediction for e in ours.examples]
    assert any(e.prediction for e in ours.examples)  # something was generated


def test_model_args_build_a_registry_model():
    lm = LMBenchLM.create_from_arg_string("model=transformer,tokenizer=byte,max_length=32,seed=1",
                                          {"batch_size": 2, "device": "cpu"})
    assert lm.max_length == 32 and lm.batch_size == 2 and lm.tokenizer_name == "byte"
    (ll, greedy), = lm.loglikelihood([_Req(("Hello", " world"))], disable_tqdm=True)
    assert ll < 0 and isinstance(greedy, bool)


class _Req:
    """The one attribute of lm-eval's ``Instance`` that the LM methods read."""

    def __init__(self, args: tuple) -> None:
        self.args = args


def _cli_task(tmp_path: Path) -> None:
    rows = [{"question": q, "choices": c, "label": 0} for q, c in QUESTIONS]
    data = _write_jsonl(tmp_path / "mc.jsonl", rows)
    _lm_eval_yaml(tmp_path, "lmb_cli", data, 'output_type: multiple_choice\ndoc_to_text: "{{question}}"\n'
                                             "doc_to_choice: choices\ndoc_to_target: label\n")


def test_lm_eval_builds_lmbench_by_name_from_model_args(tmp_path):
    """The command line's route: simple_evaluate(model="lmbench", model_args="k=v,...") -> registry -> LMBenchLM."""
    _cli_task(tmp_path)
    res = lm_eval.simple_evaluate(model="lmbench", model_args="model=transformer,tokenizer=byte,max_length=32",
                                  tasks=["lmb_cli"], task_manager=TaskManager(include_path=str(tmp_path),
                                                                              include_defaults=False),
                                  device="cpu", bootstrap_iters=0)
    assert 0.0 <= res["results"]["lmb_cli"]["acc,none"] <= 1.0
    assert res["config"]["lmbench_tokenizer"] == "byte"


@pytest.mark.skipif(not os.environ.get("LMBENCH_TEST_LM_EVAL_CLI"),
                    reason="set LMBENCH_TEST_LM_EVAL_CLI=1 to run it: the real command line indexes all of lm-eval's "
                           "built-in task files first, too slow for the default test run")
def test_command_line_runs_the_lmbench_model(tmp_path):
    _cli_task(tmp_path)
    cmd = [sys.executable, "-m", "harness.adapters.lm_eval", "run", "--model", "lmbench",
           "--model_args", "model=transformer,tokenizer=byte,max_length=32", "--tasks", "lmb_cli",
           "--include_path", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "lmb_cli" in out.stdout and "acc" in out.stdout
