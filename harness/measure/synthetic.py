"""Synthetic memory tasks: does a model *use* its context? Accuracy on held-out sequences of MQAR, selective copying
and induction heads (``harness.data.memory_tasks``), at the training length and longer.

One recipe for every model (``Budget.tasks``), trained from scratch with the shared loop on the task's batch source
(loss on answer positions only), at each learning rate of the budget's small sweep. The learning rate is chosen by
accuracy on a *validation* set of held-out sequences; the reported accuracy is on a separate *test* set, so the
sweep's choice does not inflate the number it reports (the literature usually reports the best test accuracy).
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from harness.config import TaskBudget, TrainConfig, get_budget
from harness.data.memory_tasks import MemoryTask, get_task, heldout
from harness.measure.causality import check_causality
from harness.measure.result import Result
from harness.provision.memory import is_out_of_memory

if TYPE_CHECKING:
    from harness.cells import Cell
    from harness.provision import Provisioned

ProvisionTask = Callable[..., "Provisioned"]  # (task, train_cfg, stopped_ok=...) -> Provisioned


def task_budget(cell: "Cell") -> TaskBudget:
    tb = get_budget(cell.budget).tasks
    if tb is None:
        raise ValueError(f"budget {cell.budget} defines no synthetic-task recipe (Budget.tasks)")
    return tb


@torch.no_grad()
def accuracy(module: torch.nn.Module, task: MemoryTask, seq_len: int, n: int, device: torch.device,
             split: str = "test") -> float:
    """Fraction of answer positions of ``n`` held-out sequences where the model's most likely next token is the
    answer (ties impossible in practice: argmax picks the first)."""
    data = heldout(task, seq_len, n, split)
    module.eval()
    batch = max(1, 16_384 // seq_len)
    correct = total = 0
    for s in range(0, n, batch):
        ids = torch.from_numpy(data.ids[s:s + batch]).to(device)
        mask = torch.from_numpy(data.mask[s:s + batch]).to(device)
        pred = module(ids[:, :-1]).argmax(-1)
        correct += int((pred == ids[:, 1:])[mask].sum())
        total += int(mask.sum())
    if total == 0:
        raise ValueError(f"task {task.name} produced no answer positions at length {seq_len}")
    return correct / total


def lengths(pm: "Provisioned", tb: TaskBudget) -> tuple[list[int], dict[str, str]]:
    L = pm.train_cfg.seq_len
    out, skipped = [], {}
    for f in tb.eval_factors:
        w = f * L
        if f > 1 and not getattr(pm.spec, "extrapolates", True):
            skipped[f"x{f}"] = f"{pm.cell.model} cannot run inputs longer than its training length"
        elif pm.spec.max_seq_len is not None and w > pm.spec.max_seq_len:
            skipped[f"x{f}"] = f"{pm.cell.model} supports at most {pm.spec.max_seq_len} positions"
        else:
            out.append(w)
    return out, skipped


def measure(cell: "Cell", provision_task: ProvisionTask) -> tuple[Result, "Provisioned | None"]:
    """Train the cell's model on its task at every swept learning rate, pick the best on validation sequences,
    report test accuracy at the training length and longer. Returns the result and the chosen model (whose
    training log the record keeps)."""
    task = get_task(dict(cell.params)["task"])
    tb = task_budget(cell)
    L = cell.seq_len
    chance = 1.0 / task.n_choices
    protocol: dict[str, Any] = {
        "task": task.config() | {"kind": type(task).__name__}, "vocab_size": task.vocab_size, "train_seq_len": L,
        "lrs": list(tb.lrs), "selection": "best lr by validation accuracy; accuracy reported on test sequences",
        "eval_sequences": tb.eval_sequences, "chance": chance,
        "scored": "argmax next token at answer positions only",
    }
    section = task.name  # targets are calibrated per task configuration; others fall back to [default]
    valid: dict[str, float | None] = {}
    best: tuple[float, Provisioned] | None = None
    diverged = []
    for lr in tb.lrs:
        cfg: TrainConfig = dataclasses.replace(tb.train, lr=lr)
        pm = provision_task(task, cfg, stopped_ok=True)
        if pm.train.stop in ("oom", "timeout"):
            protocol["valid_accuracy_by_lr"] = valid
            return Result(protocol=protocol, status=pm.train.stop, target_section=section,
                          reason=f"{cell.model} on {task.name} (lr {lr:g}): {pm.train.stop_reason}"), pm
        if pm.train.diverged:
            diverged.append(lr)
            valid[f"{lr:g}"] = None
            continue
        acc = accuracy(pm.module, task, L, tb.eval_sequences, pm.device, "valid")
        valid[f"{lr:g}"] = acc
        if best is None or acc > best[0]:
            best = (acc, pm)
    protocol["valid_accuracy_by_lr"] = valid
    protocol["diverged_lrs"] = diverged
    if best is None:
        return Result(protocol=protocol, status="diverged", target_section=section,
                      reason=f"{cell.model} on {task.name}: diverged at every learning rate ({diverged})"), None
    pm = best[1]
    # The guard at the training shape on real held-out sequences (a leak keyed on the task's layout shows too).
    probe = torch.from_numpy(heldout(task, L, 2, "valid").inputs.copy())
    guard = check_causality(pm.module, task.vocab_size, seq_len=L, batch=2, ids=probe)
    protocol["causality"] = guard.to_dict()
    if guard.leak:  # the answer is the next input token: a leaky model reads it instead of recalling it
        return Result(metrics={"causality_max_delta": guard.max_delta}, protocol=protocol, status="leak",
                      reason=guard.message(cell.model), leak=True, target_section=section), pm
    evaluated, skipped = lengths(pm, tb)
    protocol["not_evaluated"] = skipped
    by_length: dict[str, float] = {}
    for w in evaluated:
        try:
            by_length[str(w)] = accuracy(pm.module, task, w, tb.eval_sequences, pm.device, "test")
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            skipped[f"x{w // L}"] = f"out of memory at length {w:,}"
            break
    acc = by_length[str(L)]
    metrics: dict[str, Any] = {
        "accuracy": acc, "chance": chance, "accuracy_over_chance": acc / chance, "best_lr": pm.train_cfg.lr,
        "accuracy_by_length": by_length, "final_train_loss": pm.train.final_loss,
        "causality_max_delta": guard.max_delta,
    }
    for w, a in by_length.items():
        if int(w) != L:
            metrics[f"accuracy_x{int(w) // L}"] = a
    if not all(0.0 <= a <= 1.0 and math.isfinite(a) for a in by_length.values()):
        raise AssertionError(f"accuracy outside [0, 1]: {by_length} — a bug in the scoring, not a result")
    return Result(metrics=metrics, protocol=protocol, target_section=section, leak=False), pm


def majority_baseline(task: MemoryTask, seq_len: int, n: int) -> float:
    """Accuracy of always answering the most frequent answer of the held-out set (what a model that ignores the
    context can reach at best, up to the answers' spread): an independent reference for the chance level."""
    data = heldout(task, seq_len, n, "test")
    answers = data.targets[data.mask]
    return float(np.bincount(answers).max() / len(answers))
