"""Downstream measurements: zero-shot task scores and the fine-tuning protocol on a provisioned model.

What a result carries: the task's metrics with their interval bounds (``acc``, ``acc_low``, ``acc_high``, ...), the
majority-class and chance rates of exactly the examples scored (the floor to read ``acc`` against), the protocol
(maximum context, prefix token, source files, truncation counts, limit), and the per-example rows as a jsonl
artefact beside the records (``<results>/downstream/<cell>.jsonl``), so every number can be traced to examples.

Why a recount: the measurement re-reads the rows it wrote and recomputes every metric from the stored
log-likelihoods and gold answers with independent code (``recount``); ``recount_max_rel_diff`` is a metric, and the
targets require it to be ~0. A number the stored rows do not reproduce is not reported as a result.

Why the guard: log-likelihood scoring of a model that sees the future is meaningless, so the weights are probed by
the causality guard at the scoring shape once per weights (memoised), as the perplexity measurement does.
Measurements never write records and never assert: the finaliser applies ``fixtures/targets/downstream.toml``.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch

from harness.measure.result import Result

if TYPE_CHECKING:
    from harness.downstream import ExampleResult, FinetuneResult, TaskResult
    from harness.measure.causality import CausalityResult
    from harness.provision import Provisioned

ARTEFACT_DIR = "downstream"  # under the results folder; records store paths relative to the results folder
_GUARDS: dict[str, "CausalityResult"] = {}  # weights key -> the guard's verdict at the scoring shape


# ------------------------------------------------------------------------------------------ shared pieces
def max_len(pm: "Provisioned") -> int:
    """The model's maximum context: its training length (learned positions end there; the same for every model)."""
    return int(pm.model_cfg.max_seq_len or pm.train_cfg.seq_len)


def precheck(pm: "Provisioned") -> Result | None:
    """A result with a status hint when the weights cannot be scored honestly (leak, divergence), else None."""
    if pm.preflight is not None:
        return Result(metrics={"causality_max_delta": pm.preflight.max_delta}, status="leak",
                      reason=pm.preflight.message(pm.cell.model), leak=True,
                      protocol={"causality": {"fresh": pm.preflight.to_dict()}})
    if pm.diverged:
        return Result(status="diverged", reason=f"{pm.cell.model} diverged at step {pm.train.diverged_step} "
                                                f"(non-finite loss or gradient norm): try other seeds or a lower lr")
    found = guard(pm)
    if found.leak:
        return Result(metrics={"causality_max_delta": found.max_delta}, status="leak",
                      reason=found.message(pm.cell.model), leak=True, protocol={"causality": found.to_dict()})
    return None


def guard(pm: "Provisioned") -> "CausalityResult":
    """The causality guard at the scoring shape (``max_len`` tokens, the evaluation batch) on real windows of the
    training dataset's test split, once per weights in this process."""
    from harness.measure.causality import check_causality

    if pm.weights_key not in _GUARDS:
        length, batch = max_len(pm), pm.eval_cfg.batch_size
        ids = pm.ids("test")
        n = min(batch, len(ids) // length)
        probe = (torch.as_tensor(np.asarray(ids[: n * length], dtype=np.int64)).reshape(n, length)
                 if n >= 1 else None)
        _GUARDS[pm.weights_key] = check_causality(pm.module, pm.tokenizer.vocab_size, seq_len=length, batch=batch,
                                                  ids=probe)
    return _GUARDS[pm.weights_key]


def artefact_path(results_dir: Path, pm: "Provisioned", kind: str, name: str, limit: int | None,
                  suffix: str = ".jsonl") -> Path:
    """``<results>/downstream/<kind>-<model>-<dataset>-s<seed>-<name>-<hash>.jsonl``: readable, and unique per cell
    (the hash covers the whole cell id, the limit and the name)."""
    c = pm.cell
    key = f"{c.cell_id}|{kind}|{name}|limit={limit}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{kind}-{c.model}-{c.dataset}-s{c.seed}-{name}")
    return Path(results_dir) / ARTEFACT_DIR / f"{stem}-{digest}{suffix}"


def relative_path(path: Path, results_dir: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(results_dir).resolve()))
    except ValueError:
        return str(path)


def with_intervals(metrics: dict[str, float], intervals: dict[str, Any]) -> dict[str, float]:
    """``{m: v}`` plus ``m_low`` / ``m_high`` for every metric with an interval."""
    out = dict(metrics)
    for name, iv in intervals.items():
        out[f"{name}_low"], out[f"{name}_high"] = iv.low, iv.high
    return out


# ------------------------------------------------------------------------------------------ recount
def _argmax(values: Sequence[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def _f1_of_one(preds: Sequence[int], golds: Sequence[int]) -> float:
    """F1 of class 1 (MRPC's "yes"), counted from scratch."""
    tp = sum(p == 1 and g == 1 for p, g in zip(preds, golds))
    fp = sum(p == 1 and g != 1 for p, g in zip(preds, golds))
    fn = sum(p != 1 and g == 1 for p, g in zip(preds, golds))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def recount(rows: Sequence[dict[str, Any]], output_type: str, metrics: Iterable[str]) -> dict[str, float]:
    """Every metric recomputed from stored rows (plain dicts as read from the jsonl) with code independent of
    ``harness.downstream.results.aggregate``: predictions from the log-likelihoods, not the stored predictions."""
    out: dict[str, float] = {}
    n = len(rows)
    if output_type == "multiple_choice":
        golds = [int(r["gold"]) for r in rows]
        preds = [_argmax(r["loglikelihoods"]) for r in rows]
        for m in metrics:
            if m == "acc":
                out[m] = sum(p == g for p, g in zip(preds, golds)) / n
            elif m == "acc_norm":
                norm = [_argmax([ll / len(c) if len(c) else ll for ll, c in zip(r["loglikelihoods"], r["choices"])])
                        for r in rows]
                out[m] = sum(p == g for p, g in zip(norm, golds)) / n
            elif m == "f1":
                out[m] = _f1_of_one(preds, golds)
    elif output_type == "loglikelihood":
        for m in metrics:
            if m == "acc":
                out[m] = sum(bool(r["is_greedy"][0]) for r in rows) / n
            elif m == "perplexity":
                out[m] = math.exp(-sum(r["loglikelihoods"][0] for r in rows) / n)
            elif m == "token_perplexity":
                out[m] = math.exp(-sum(r["loglikelihoods"][0] for r in rows) / sum(r["n_tokens"][0] for r in rows))
    elif output_type == "generate_until":
        from harness.downstream.metrics import exact_match, token_f1

        for m in metrics:
            if m == "exact_match":
                out[m] = sum(exact_match(r["prediction"], r["gold"]) for r in rows) / n
            elif m == "f1":
                out[m] = sum(token_f1(r["prediction"], r["gold"]) for r in rows) / n
    return out


def recount_diff(path: Path, output_type: str, reported: dict[str, float]) -> tuple[float, dict[str, float]]:
    """Re-read ``path`` and recount; the largest relative difference from ``reported`` (0.0 when they agree) and the
    recounted values. A metric the recount cannot reproduce counts as an infinite difference."""
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    again = recount(rows, output_type, reported)
    diffs = [abs(again[m] - v) / max(1.0, abs(v)) if m in again else math.inf for m, v in reported.items()]
    return (max(diffs) if diffs else math.inf), again


# ------------------------------------------------------------------------------------------ zero-shot
def _rates(examples: Sequence["ExampleResult"]) -> dict[str, float]:
    """Majority-class rate (always answering the most frequent gold position) and chance (mean 1/#choices) of
    exactly the examples scored: the floor a multiple-choice accuracy is read against."""
    golds = [e.gold for e in examples if isinstance(e.gold, int) and e.choices and len(e.choices) > 1]
    if len(golds) != len(examples):
        return {}
    return {"majority_acc": Counter(golds).most_common(1)[0][1] / len(golds),
            "chance_acc": float(np.mean([1.0 / len(e.choices) for e in examples]))}


def per_task_limit(limit: int | None, n_tasks: int) -> int | None:
    """A cell's ``limit`` split evenly over the tasks of a group (at least one example each): a cell costs about
    ``limit`` examples whether it is one task or MMLU's 57 subjects, and every subject is still asked."""
    return limit if limit is None or n_tasks == 1 else max(1, -(-limit // n_tasks))


def measure(pm: "Provisioned", task: str, *, results_dir: Path, limit: int | None = None) -> Result:
    """Zero-/few-shot score of ``task`` (a task or a group such as ``mmlu``) on ``pm.module``: its first ``limit``
    examples; for a group, the first ``per_task_limit(limit, n)`` examples of each of its n tasks."""
    from harness.downstream import aggregate_group, evaluate_task, resolve_tasks, write_jsonl
    from harness.downstream.evaluate import ScoringConfig

    early = precheck(pm)
    if early is not None:
        return early
    specs = resolve_tasks([task])
    each = per_task_limit(limit, len(specs))
    cfg = ScoringConfig(max_len=max_len(pm), batch_size=pm.eval_cfg.batch_size, device=str(pm.device))
    results: list[TaskResult] = [evaluate_task(pm.module, pm.tokenizer, s, pm.data.ctx, cfg, limit=each)
                                 for s in specs]
    examples = [e for r in results for e in r.examples]
    path = write_jsonl(examples, artefact_path(results_dir, pm, "zero-shot", task, limit))
    output_type = specs[0].output_type
    if len(results) == 1:
        (r,) = results
        metrics = with_intervals(r.metrics, r.intervals)
        checked = dict(r.metrics)
    else:  # a group: its accuracy over all questions (micro, lm-eval's MMLU number) and over subjects (macro)
        metrics, checked = {}, {}
        for m in specs[0].metrics:
            g = aggregate_group(task, results, m)
            metrics |= {m: g.micro, f"{m}_macro": g.macro, f"{m}_low": g.interval.low, f"{m}_high": g.interval.high}
            checked[m] = g.micro
    diff, again = recount_diff(path, output_type, checked)
    metrics |= _rates(examples) | {
        "n_examples": float(len(examples)), "recount_max_rel_diff": diff,
        "truncated_frac": sum(e.truncated for e in examples) / len(examples),
    }
    protocol = dict(results[0].protocol) | {
        "task": task, "tasks": [s.name for s in specs], "limit": limit, "limit_per_task": each,
        "metrics": list(specs[0].metrics), "about": specs[0].about, "device": str(pm.device),
        "n_truncated": sum(r.protocol["n_truncated"] for r in results),
        "n_boundary_merged": sum(r.protocol["n_boundary_merged"] for r in results),
        "intervals": {k: v.as_dict() for k, v in results[0].intervals.items()} if len(results) == 1 else
                     "wilson over all questions of the group",
        "recount": {"values": again, "rule": "predictions re-derived from the stored log-likelihoods"},
        "causality": guard(pm).to_dict(),
    }
    if len(results) > 1:
        protocol["per_task"] = {r.task: dict(r.metrics) | {"n": r.n} for r in results}
        protocol["sources"] = sorted({str(r.protocol.get("source")) for r in results})
    return Result(metrics=metrics, protocol=protocol, artefacts={"examples": relative_path(path, results_dir)},
                  leak=False, target_section=task)


# ------------------------------------------------------------------------------------------ fine-tuning
def measure_finetune(pm: "Provisioned", task: str, *, results_dir: Path, limit: int | None, steps: int,
                     seeds: Sequence[int], folds: Sequence[int] | None, n_folds: int = 5) -> Result:
    """The fine-tuning protocol (``harness.downstream.finetune``) on ``task``'s dev set: per fine-tuning seed,
    accuracy (and F1 of class 1 for two classes) over the held-out folds, the k-fold split recorded."""
    from harness.downstream import FinetuneRecipe, classification_data, finetune_cv, get_task

    early = precheck(pm)
    if early is not None:
        return early
    spec = get_task(task)
    texts, labels, n_classes = classification_data(spec, pm.data.ctx, limit=limit)
    recipe = FinetuneRecipe(steps=steps, seeds=tuple(seeds), max_len=max_len(pm), n_folds=n_folds,
                            folds=tuple(folds) if folds is not None else None)
    res = finetune_cv(pm.module, pm.tokenizer, texts, labels, n_classes, recipe, task=task, device=pm.device)
    path = artefact_path(results_dir, pm, "finetune", task, limit, suffix=".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finetune_artefact(res, labels), indent=1, default=str), encoding="utf-8")
    want_f1 = "f1" in spec.metrics and n_classes == 2  # MRPC's headline F1 (of "yes"); accuracy for the others
    metrics: dict[str, float] = {}
    for s in res.seeds:
        metrics[f"seed{s.seed}_acc"] = s.acc
        metrics[f"seed{s.seed}_acc_low"], metrics[f"seed{s.seed}_acc_high"] = s.acc_low, s.acc_high
        if want_f1:
            metrics[f"seed{s.seed}_f1"] = s.f1
    summary = res.summary()
    metrics |= {"acc": summary["acc_mean"], "acc_std": summary["acc_std"], "majority_acc": res.majority_rate,
                "n_examples": float(res.seeds[0].n), "n_seeds": float(len(res.seeds))}
    if want_f1:
        metrics["f1"] = float(np.mean([s.f1 for s in res.seeds]))
    metrics["recount_max_rel_diff"] = _finetune_recount(path, metrics)
    metrics["final_train_loss"] = float(np.mean([f.final_train_loss for s in res.seeds for f in s.folds]))
    status, reason = (None, None)
    if not math.isfinite(metrics["final_train_loss"]):
        status, reason = "nonfinite", f"fine-tuning {pm.cell.model} on {task} gave a non-finite training loss"
    protocol = {"task": task, "recipe": res.recipe, "split": res.split, "limit": limit, "n_classes": n_classes,
                "feature_source": asdict(res.feature_source), "folds_run": list(recipe.folds or range(n_folds)),
                "data": "dev set only on disk: k-fold cross-validation on it (a fold is scored by a model "
                        "fine-tuned on the other folds)", "causality": guard(pm).to_dict(), "device": str(pm.device)}
    return Result(metrics=metrics, protocol=protocol, artefacts={"folds": relative_path(path, results_dir)},
                  leak=False, status=status, reason=reason, target_section="finetune")


def _finetune_artefact(res: "FinetuneResult", labels: Sequence[int]) -> dict[str, Any]:
    """The summary plus, per seed and fold, the held-out indices, their gold labels and the predictions."""
    return res.summary() | {"seeds": [
        {"seed": s.seed, "acc": s.acc, "f1": s.f1, "folds": [
            {"fold": f.fold, "n_train": f.n_train, "test_indices": f.test_indices,
             "gold": [int(labels[i]) for i in f.test_indices], "predictions": f.predictions,
             "final_train_loss": f.final_train_loss} for f in s.folds]} for s in res.seeds]}


def _finetune_recount(path: Path, metrics: dict[str, float]) -> float:
    """Per-seed accuracy and F1 recomputed from the stored predictions and gold labels; the largest difference."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    diffs = []
    for s in data["seeds"]:
        gold = [g for f in s["folds"] for g in f["gold"]]
        pred = [p for f in s["folds"] for p in f["predictions"]]
        again = {"acc": sum(p == g for p, g in zip(pred, gold)) / len(gold)}
        if f"seed{s['seed']}_f1" in metrics:
            again["f1"] = _f1_of_one(pred, gold)
        diffs += [abs(v - metrics[f"seed{s['seed']}_{m}"]) for m, v in again.items()]
    return max(diffs) if diffs else math.inf
