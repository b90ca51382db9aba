"""The downstream benchmark through pytest, on the toy model at the micro budget with ``--limit``: every selected
task is a cell whose per-example rows sit beside the records and reproduce its numbers, an absent task is a skip
naming its files, the fine-tuning test runs only fine-tunable tasks and records its split, the controls pass, and
bad ``--tasks`` / ``--limit`` values are one usage line."""
import json

import pytest

from harness.measure.downstream import recount_diff
from harness.measure.downstream_controls import shuffled_expectation
from harness.results.records import read_records
from tests.helpers import TOY, run_benches

BASE = ("-m", "downstream", "--models", TOY, "--budget", "micro", "--limit", "4", "-p", "no:randomly")
TASKS = "copa,mrpc,mmlu,lambada_openai,squad_v1"


def _task(rec: dict) -> str | None:
    return next((p.split("=", 1)[1] for p in rec["cell_id"].split("|") if p.startswith("task=")), None)


@pytest.fixture(scope="module")
def ds_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("downstream")
    proc = run_benches(base / "r", base / "c", *BASE, "--tasks", TASKS, "-rs")
    recs = read_records(base / "r" / "records.jsonl")
    return base / "r", proc, recs


def test_every_task_is_a_cell_with_its_rows_beside_the_records(ds_run):
    results, proc, recs = ds_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    zero = {_task(r): r for r in recs if r["cell_id"].startswith("downstream|")}
    assert set(zero) == {"copa", "mrpc", "mmlu", "lambada_openai", "squad_v1"}
    for name in ("copa", "mrpc", "mmlu", "lambada_openai"):
        r = zero[name]
        assert r["status"] == "passed", r["reason"]
        assert "limit=4" in r["cell_id"] and r["dataset"] == "wikitext-2" and r["protocol"]["limit"] == 4
        m = r["metrics"]
        assert 0.0 <= m["acc_low"] <= m["acc"] <= m["acc_high"] <= 1.0
        assert m["recount_max_rel_diff"] == 0.0 and "recount_max_rel_diff" in r["protocol"]["targets"]
        rows = [json.loads(line) for line in (results / r["artefacts"]["examples"]).read_text().splitlines()]
        assert len(rows) == m["n_examples"]
        assert {"context", "choices", "loglikelihoods", "prediction", "gold", "scores"} <= set(rows[0])
    assert zero["mmlu"]["metrics"]["n_examples"] == 57  # a group's limit is split over its subjects, >= 1 each
    assert len(zero["mmlu"]["protocol"]["per_task"]) == 57 and "acc_macro" in zero["mmlu"]["metrics"]
    assert "f1" in zero["mrpc"]["metrics"] and zero["lambada_openai"]["metrics"]["perplexity"] >= 1.0
    assert 0.0 < zero["copa"]["metrics"]["majority_acc"] <= 1.0


def test_an_absent_task_is_skipped_naming_its_files(ds_run):
    _, proc, recs = ds_run
    (squad,) = [r for r in recs if _task(r) == "squad_v1"]
    assert squad["status"] == "skipped"
    assert squad["reason"].startswith("squad_v1: missing under") and "squad-v1.1/dev-v1.1.json" in squad["reason"]
    assert "squad-v1.1/dev-v1.1.json" in proc.stdout  # -rs shows it


def test_finetuning_runs_the_finetunable_tasks_and_records_the_split(ds_run):
    results, _, recs = ds_run
    (ft,) = [r for r in recs if r["cell_id"].startswith("downstream/finetune|")]
    assert _task(ft) == "mrpc" and ft["status"] == "passed", ft["reason"]
    m, split = ft["metrics"], ft["protocol"]["split"]
    assert {"acc", "f1", "seed0_acc", "seed0_f1", "majority_acc"} <= set(m) and m["recount_max_rel_diff"] == 0.0
    assert split["k"] == 5 and sum(split["sizes"]) == 40 and split["sha256_16"]  # the micro budget's 40 examples
    assert ft["protocol"]["recipe"]["early_stopping"].startswith("none")
    folds = json.loads((results / ft["artefacts"]["folds"]).read_text())
    assert folds["seeds"][0]["folds"][0]["test_indices"] and folds["split"] == split


def test_controls_score_above_chance_and_at_chance_on_shuffled_labels(ds_run):
    _, _, recs = ds_run
    (ctl,) = [r for r in recs if r["cell_id"].startswith("downstream/controls|")]
    assert ctl["status"] == "passed", ctl["reason"]
    assert ctl["dataset"] == "synthetic-choice" and ctl["metrics"]["acc"] >= 0.9
    assert ctl["metrics"]["shuffled_abs_z"] <= 4.0 and ctl["metrics"]["shuffled_acc"] < 0.5
    (agree,) = [r for r in recs if r["cell_id"].startswith("downstream/lm_eval_agreement|")]
    if agree["status"] == "skipped":
        assert "lm-eval is not installed" in agree["reason"]
    else:
        assert agree["status"] == "passed", agree["reason"]
        assert agree["metrics"]["acc_max_abs_diff"] == 0.0 and agree["metrics"]["synthetic_acc"] >= 0.9


def test_the_summary_shows_tasks_and_draws_the_plot(ds_run):
    results, _, _ = ds_run
    md = (results / "summary.md").read_text()
    rows = [line.split(" | ") for line in md.splitlines() if line.startswith("| tests.toys:causal_spec |")]
    assert any("| test | limit | task |" in line for line in md.splitlines()), md
    assert ["downstream", "4", "copa"] in [r[2:5] for r in rows] and ["finetune", "", "mrpc"] in [r[2:5] for r in rows]
    assert json.loads((results / "summary.json").read_text())["plots"] == ["plots/downstream-wikitext-2.png"]


def test_no_finetunable_task_selected_deselects_the_finetune_test(tmp_path):
    proc = run_benches(tmp_path / "r", tmp_path / "c", *BASE, "--tasks", "piqa", "--collect-only")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_finetune" not in proc.stdout and "test_downstream[tests.toys:causal_spec-wikitext-2-s0-piqa]" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--tasks", "piqa,nope"], "--tasks: unknown task 'nope'; valid tasks: boolq, copa,"),
    (["--tasks", ","], "--tasks ',' is empty"),
    (["--limit", "0"], "--limit '0': expected a positive integer"),
])
def test_bad_downstream_options_are_one_usage_line(inproc, args, message):
    result = inproc.runpytest("--results-dir", str(inproc.results), *args)
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert result.ret == pytest.ExitCode.USAGE_ERROR and len(errors) == 1 and message in errors[0], result.errlines
    assert "Traceback" not in result.stderr.str()


def test_the_recount_sees_a_row_that_does_not_match(tmp_path):
    rows = [{"gold": 0, "choices": ["a", "bb"], "loglikelihoods": [-1.0, -3.0]},
            {"gold": 1, "choices": ["a", "bb"], "loglikelihoods": [-2.0, -2.5]}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert recount_diff(path, "multiple_choice", {"acc": 0.5, "acc_norm": 1.0})[0] == 0.0
    assert recount_diff(path, "multiple_choice", {"acc": 1.0})[0] == 0.5  # a reported number the rows do not give


def test_shuffled_expectation_is_the_match_rate_of_a_random_permutation():
    assert shuffled_expectation([0, 0, 1, 1], [0, 1, 0, 1]) == 0.5
    assert shuffled_expectation([0, 1, 2, 3], [0, 1, 2, 3]) == 0.25


def test_default_tasks_are_every_shipped_task_with_groups_as_one():
    from harness.options import parse_options

    opts = parse_options(models="transformer", budget="micro")
    assert {"piqa", "lambada_openai", "mmlu", "mmlu_5shot", "squad_v1", "hellaswag"} <= set(opts.tasks)
    assert not any(t.startswith("mmlu_") and t != "mmlu_5shot" for t in opts.tasks) and opts.limit is None
    assert not opts.given("dataset")  # so the downstream tests' default_dataset=["wikitext-2"] applies
    assert parse_options(datasets="synthetic-markov").given("dataset")
    assert parse_options(tasks="mmlu_anatomy,piqa,piqa", limit="3").tasks == ["mmlu_anatomy", "piqa"]
