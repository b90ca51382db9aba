"""Correctness controls for downstream numbers, measured on a model trained on the ``synthetic-choice`` dataset.

A small model's real-task accuracy near chance cannot tell a weak model from a broken pipeline. These can:

* **synthetic task** (``measure_controls``): the model was trained with the shared loop on ``"kv"`` lines of a
  random letter bijection; asked ``"k"`` with four candidate values through the very same scorer, it must score
  far above chance (0.25). A scorer that misaligns tokens, mixes up choices or reads the wrong positions cannot.
* **shuffled labels** (same measurement): the same questions with their gold positions permuted across examples,
  re-scored: accuracy must fall to what matching a random permutation gives (``shuffled_expected_acc``, about
  0.25); a pipeline that leaks the label into what the model sees would keep scoring high.
* **agreement with lm-eval** (``measure_lm_eval_agreement``): EleutherAI's lm-evaluation-harness, running a local
  task over the same questions (and over real ``copa`` questions as lmbench renders them) through the
  ``lmbench`` model adapter, must report the accuracy lmbench reports and the same per-choice log-likelihoods.
  On a model that knows the answers, agreement is not two coin flips agreeing.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.measure.downstream import artefact_path, max_len, precheck, recount_diff, relative_path, with_intervals
from harness.measure.result import Result

if TYPE_CHECKING:
    from harness.downstream import Example, ExampleResult
    from harness.provision import Provisioned

CONTROL_DATASET = "synthetic-choice"
SHUFFLE_SEED = 0


def control_examples(n: int) -> list["Example"]:
    """The first ``n`` questions of the task whose training text is the ``synthetic-choice`` dataset."""
    from harness.downstream.synthetic import CHOICE_SEED, CHOICE_SEPARATOR, CHOICE_TRAIN_LINES, synthetic_choice_task

    return synthetic_choice_task(n_examples=n, seed=CHOICE_SEED, n_train_lines=CHOICE_TRAIN_LINES,
                                 separator=CHOICE_SEPARATOR).examples


def shuffled_expectation(preds: Sequence[int], golds: Sequence[int]) -> float:
    """Expected accuracy of fixed predictions against a uniformly random permutation of the gold labels:
    sum over classes of (share predicted c) x (share gold c)."""
    n = len(golds)
    return sum(preds.count(c) * list(golds).count(c) for c in set(golds)) / (n * n)


def _score(pm: "Provisioned", examples: Sequence["Example"]) -> list["ExampleResult"]:
    from harness.downstream import ScoringConfig, score_examples

    cfg = ScoringConfig(max_len=max_len(pm), batch_size=pm.eval_cfg.batch_size, device=str(pm.device))
    return score_examples(pm.module, pm.tokenizer, examples, cfg)


def measure_controls(pm: "Provisioned", *, results_dir: Path, n_examples: int) -> Result:
    """Synthetic-task accuracy and the shuffled-label control (module doc) on a model trained on
    ``synthetic-choice``."""
    from harness.downstream import aggregate, shuffle_labels, write_jsonl

    if pm.cell.dataset != CONTROL_DATASET:
        raise ValueError(f"the downstream controls need a model trained on {CONTROL_DATASET}, not {pm.cell.dataset}")
    early = precheck(pm)
    if early is not None:
        return early
    examples = control_examples(n_examples)
    real = aggregate("synthetic_choice", _score(pm, examples), ("acc", "acc_norm"))
    shuffled_ex = shuffle_labels(examples, SHUFFLE_SEED)
    shuffled = aggregate("synthetic_choice_shuffled", _score(pm, shuffled_ex), ("acc",))
    path = write_jsonl(real.examples, artefact_path(results_dir, pm, "controls", "synthetic", n_examples))
    spath = write_jsonl(shuffled.examples, artefact_path(results_dir, pm, "controls", "shuffled", n_examples))
    d_real, _ = recount_diff(path, "multiple_choice", real.metrics)
    d_shuf, _ = recount_diff(spath, "multiple_choice", shuffled.metrics)
    preds = [int(e.prediction) for e in shuffled.examples]
    golds = [int(e.gold) for e in shuffled.examples]
    expected = shuffled_expectation(preds, golds)
    se = math.sqrt(max(expected * (1 - expected), 1e-12) / len(golds))
    metrics = with_intervals(real.metrics, real.intervals) | {
        "chance_acc": 1.0 / len(examples[0].choices),
        "shuffled_acc": shuffled.metrics["acc"],
        "shuffled_expected_acc": expected,
        "shuffled_abs_z": abs(shuffled.metrics["acc"] - expected) / se,
        "n_examples": float(len(examples)),
        "recount_max_rel_diff": max(d_real, d_shuf),
    }
    protocol = {
        "task": "synthetic_choice", "n_choices": len(examples[0].choices), "max_len": max_len(pm),
        "tokenizer": pm.tokenizer.name, "shuffle_seed": SHUFFLE_SEED, "device": str(pm.device),
        "shuffled": "gold positions permuted across examples (seeded), the examples re-scored; expected accuracy "
                    "= sum_c share_pred(c) * share_gold(c); shuffled_abs_z = |acc - expected| / binomial s.e.",
        "intervals": {k: v.as_dict() for k, v in real.intervals.items()},
    }
    return Result(metrics=metrics, protocol=protocol, leak=False, target_section="controls",
                  artefacts={"examples": relative_path(path, results_dir), "shuffled": relative_path(spath, results_dir)})


# ------------------------------------------------------------------------------------------ lm-eval
def _lm_eval_task(folder: Path, name: str, rows: list[dict[str, Any]], delimiter: str, cache_dir: Path) -> None:
    """A local lm-eval task over ``rows`` ({context, choices, label}): lm-eval renders, splits and scores it."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        f"  cache_dir: {cache_dir}\ntest_split: test\noutput_type: multiple_choice\n"
        f'doc_to_text: "{{{{context}}}}"\ndoc_to_choice: choices\ndoc_to_target: label\n'
        f"target_delimiter: {json.dumps(delimiter)}\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n", encoding="utf-8")


def measure_lm_eval_agreement(pm: "Provisioned", *, results_dir: Path, n_examples: int,
                              real_task: str | None = "copa", limit: int | None = None) -> Result:
    """lm-eval's accuracy, acc_norm and per-choice log-likelihoods against lmbench's on the same model and
    questions (module doc). ``ImportError`` if lm-eval is not installed (the benchmark skips with that reason)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from harness.adapters.lm_eval import LMBenchLM
    from harness.downstream import build_examples, get_task, task_availability

    early = precheck(pm)
    if early is not None:
        return early
    sets: dict[str, list[Example]] = {"lmb_synthetic": control_examples(n_examples)}
    notes = None
    if real_task is not None:
        reason = task_availability(real_task, pm.data.ctx)
        if reason is None:
            sets[f"lmb_{real_task}"] = build_examples(get_task(real_task), pm.data.ctx, limit)[0]
        else:
            notes = f"{real_task} not compared: {reason}"
    lm = LMBenchLM(model=pm.module, tokenizer=pm.tokenizer, max_length=max_len(pm),
                   batch_size=pm.eval_cfg.batch_size, device=str(pm.device))
    metrics: dict[str, float] = {}
    per_set: dict[str, Any] = {}
    out_dir = artefact_path(results_dir, pm, "lm-eval", "agreement", n_examples, suffix="")
    out_dir.mkdir(parents=True, exist_ok=True)
    worst_acc, worst_ll = 0.0, 0.0
    with tempfile.TemporaryDirectory(prefix="lmbench-lm-eval-") as tmp:
        for name, examples in sets.items():
            delim = {e.target_delimiter for e in examples}
            if len(delim) != 1:
                raise ValueError(f"{name}: examples with different target delimiters {sorted(delim)}")
            rows = [{"context": e.context, "choices": list(e.choices), "label": int(e.gold)} for e in examples]
            _lm_eval_task(out_dir, name, rows, delim.pop(), Path(tmp) / "hf-cache")  # Arrow cache: thrown away
            theirs = lm_eval.simple_evaluate(model=lm, tasks=[name], bootstrap_iters=0, log_samples=True,
                                             task_manager=TaskManager(include_path=str(out_dir),
                                                                      include_defaults=False))
            ours = _score(pm, examples)
            got = theirs["results"][name]
            acc = sum(e.scores["acc"] for e in ours) / len(ours)
            acc_norm = sum(e.scores["acc_norm"] for e in ours) / len(ours)
            samples = sorted(theirs["samples"][name], key=lambda s: s["doc_id"])
            ll_diff = max(abs(ll - mine) for s, e in zip(samples, ours, strict=True)
                          for (ll, _), mine in zip(s["filtered_resps"], e.loglikelihoods, strict=True))
            short = name.removeprefix("lmb_")
            metrics |= {f"{short}_lm_eval_acc": got["acc,none"], f"{short}_acc": acc,
                        f"{short}_lm_eval_acc_norm": got["acc_norm,none"], f"{short}_acc_norm": acc_norm}
            worst_acc = max(worst_acc, abs(got["acc,none"] - acc), abs(got["acc_norm,none"] - acc_norm))
            worst_ll = max(worst_ll, ll_diff)
            per_set[short] = {"n": len(ours), "max_abs_loglikelihood_diff": ll_diff,
                              "lm_eval_version": getattr(lm_eval, "__version__", "?")}
    metrics |= {"acc_max_abs_diff": worst_acc, "loglikelihood_max_abs_diff": worst_ll,
                "n_examples": float(sum(len(v) for v in sets.values()))}
    protocol = {"sets": per_set, "max_len": max_len(pm), "tokenizer": pm.tokenizer.name, "device": str(pm.device),
                "how": "local lm-eval tasks (dataset_path: json) over the rendered questions, run with "
                       "lm_eval.simple_evaluate on harness.adapters.lm_eval.LMBenchLM wrapping this model",
                "limit": limit}
    return Result(metrics=metrics, protocol=protocol, leak=False, target_section="lm_eval", notes=notes,
                  artefacts={"lm_eval_tasks": relative_path(out_dir, results_dir)})
