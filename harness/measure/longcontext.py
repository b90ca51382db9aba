"""Long-context stability (did training at length L stay finite and learn?) and length extrapolation (does a model
trained at L work at 2L, 4L, 8L, and does it use the context it has?).

Stability reads the training log the shared loop keeps for every run (``TrainResult``): the loss and gradient norm
of every step, where and why it stopped (non-finite numbers, out of memory, out of time), step time and peak
memory, and adds the held-out loss at the training length. Nothing here trains: ``recipe`` names the long-context
recipe and the provisioner trains (or loads) the model with it, so stability and extrapolation of one (model, L,
seed) share one training run.

Held-out protocol (both measurements): the first ``n`` tokens of the test split cut into disjoint windows of ``W``
inputs; window k reads ``ids[kW : kW + W]`` and is scored on ``ids[kW + 1 : kW + W + 1]``, so every target is
scored and position p of a window has exactly p + 1 tokens of context (itself and p before it). ``n`` is the same
for every W of a cell, so losses at different W are over the same tokens. NLL is summed in float64 from float32
log-softmax. This is not the perplexity benchmark's sliding-window protocol (which does not score a window's first
target); compare these numbers with each other, not with ``-m perplexity``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from harness.config import EvalConfig, TrainConfig, get_budget
from harness.measure.causality import check_causality
from harness.measure.result import Result
from harness.provision.memory import is_out_of_memory

if TYPE_CHECKING:
    from harness.cells import Cell
    from harness.provision import Provisioned

# A loss spike: a step whose loss exceeds SPIKE_FACTOR × the median of the SPIKE_WINDOW losses before it (counted
# from step SPIKE_WINDOW on, so the falling early curve is never a "spike").
SPIKE_FACTOR = 1.5
SPIKE_WINDOW = 20
# Held-out tokens: at least LONG_EVAL_MIN, and two windows at the longest extrapolation length, within the budget's
# eval_tokens and the split.
LONG_EVAL_MIN = 32_768
EXTRAPOLATION_FACTORS = (1, 2, 4, 8)
POSITION_CHUNK = 65_536  # positions per log-softmax chunk (bounds the float32 copy of the logits)
CLAIM_SECTION = "long-context-claim"  # the targets section for models whose entry claims long-context stability


def recipe(cell: "Cell") -> TrainConfig:
    """The long-context recipe of the cell's budget (``Budget.long_recipe``): the provisioner applies it at the
    cell's length, with the same tokens per step at every length of the default sweep."""
    return get_budget(cell.budget).long_recipe


def eval_config(cell: "Cell") -> EvalConfig:
    """The budget's evaluation config with a batch of windows sized to the cell's length: as many tokens per
    evaluation batch as the budget's ``batch_size`` windows of its training length (at least one window), so memory
    does not grow with L. The fresh causality guard probes the model at this shape too."""
    budget = get_budget(cell.budget)
    length = cell.seq_len or budget.long_recipe.seq_len
    tokens = budget.eval.batch_size * budget.train.seq_len
    return dataclasses.replace(budget.eval, batch_size=max(1, tokens // length))


def untrained_reason(cell: "Cell") -> str | None:
    """Why stability is not measured for ``cell``: a pretrained checkpoint (``hf:PATH``) is loaded, never trained
    here. (Its extrapolation is measured.)"""
    from harness.models import get_model_spec

    if cell.model is not None and get_model_spec(cell.model).pretrained is not None:
        return f"{cell.model} is a pretrained checkpoint, loaded and never trained here: no training to be stable"
    return None


def loss_spikes(losses: list[float], factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> list[int]:
    """Steps whose finite loss exceeds ``factor`` × the median of the ``window`` finite losses before it."""
    out = []
    for i in range(window, len(losses)):
        prev = [x for x in losses[i - window:i] if math.isfinite(x)]
        if prev and math.isfinite(losses[i]) and losses[i] > factor * float(np.median(prev)):
            out.append(i)
    return out


def training_metrics(tr: Any) -> dict[str, Any]:
    """The stability facts of a training log (``TrainResult``)."""
    losses, grads = list(tr.losses), list(tr.grad_norms)
    finite_g = [g for g in grads if math.isfinite(g)]
    finite_l = [x for x in losses if math.isfinite(x)]
    first = losses[0] if losses and math.isfinite(losses[0]) else None
    final = float(np.mean(finite_l[-10:])) if finite_l and tr.stop is None else None
    m: dict[str, Any] = {
        "steps_run": tr.steps,
        "nonfinite_losses": sum(1 for x in losses if not math.isfinite(x)),
        "nonfinite_grad_norms": sum(1 for g in grads if not math.isfinite(g)),
        "loss_spikes": len(loss_spikes(losses)),
        "diverged": bool(tr.diverged),
        "diverged_step": tr.diverged_step,
        "first_loss": first,
        "final_loss": final,
        "final_over_first_loss": final / first if final is not None and first else None,
        "grad_norm_mean": float(np.mean(finite_g)) if finite_g else None,
        "grad_norm_std": float(np.std(finite_g)) if finite_g else None,
        "grad_norm_max": float(np.max(finite_g)) if finite_g else None,
        "step_time_s": tr.step_time_s,
        "train_tokens_per_s": tr.tokens / tr.wall_s if tr.wall_s and not tr.cached else None,
    }
    mem = tr.peak_memory or {}
    if mem.get("kind") == "cuda":
        m["peak_mem_mb"], m["peak_reserved_mb"] = mem["allocated_peak_mb"], mem["reserved_peak_mb"]
    elif mem.get("kind") == "rss":
        m["peak_mem_mb"] = mem["rss_peak_mb"]
    return {k: v for k, v in m.items() if v is not None or k in ("diverged_step", "final_loss")}


def _section(pm: "Provisioned") -> str | None:
    return CLAIM_SECTION if getattr(pm.spec, "long_context", False) else None


def _eval_ids(pm: "Provisioned", longest: int) -> np.ndarray:
    ids = pm.ids("test")
    budget = pm.eval_cfg.eval_tokens or len(ids)
    n = min(len(ids), budget, max(LONG_EVAL_MIN, 2 * longest) + 1)
    return ids[:n]


@torch.no_grad()
def window_nll(model: torch.nn.Module, ids: np.ndarray, window: int, device: torch.device, batch_size: int,
               deadline: float | None = None, autocast: str | None = None) -> np.ndarray | None:
    """Per-position NLL (nats, float64), shape (n_windows, window), of the disjoint windows of the module
    docstring; None if the deadline passed first."""
    n_windows = (len(ids) - 1) // window
    if n_windows < 1:
        raise ValueError(f"{len(ids)} tokens hold no window of {window} inputs plus its last target")
    data = torch.as_tensor(np.asarray(ids[: n_windows * window + 1]), dtype=torch.long)
    out = np.empty((n_windows, window), dtype=np.float64)
    model.eval()
    ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if autocast == "bf16" else None
    for start in range(0, n_windows, batch_size):
        if deadline is not None and time.monotonic() > deadline:
            return None
        rows = range(start, min(start + batch_size, n_windows))
        x = torch.stack([data[r * window:(r + 1) * window] for r in rows]).to(device)
        y = torch.stack([data[r * window + 1:(r + 1) * window + 1] for r in rows]).to(device)
        if ctx is not None:
            with ctx:
                logits = model(x)
        else:
            logits = model(x)
        for c in range(0, window, POSITION_CHUNK):
            lp = torch.log_softmax(logits[:, c:c + POSITION_CHUNK].float(), dim=-1)
            nll = -lp.gather(-1, y[:, c:c + POSITION_CHUNK].unsqueeze(-1)).squeeze(-1)
            out[start:start + len(rows), c:c + POSITION_CHUNK] = nll.double().cpu().numpy()
        del logits
    return out


def position_buckets(nll: np.ndarray) -> dict[str, float]:
    """Mean NLL by tokens of context visible (position p sees p + 1): buckets 1, 2-3, 4-7, … (powers of two)."""
    out: dict[str, float] = {}
    lo = 1
    while lo <= nll.shape[1]:
        hi = min(2 * lo - 1, nll.shape[1])
        out[f"{lo}-{hi}" if hi > lo else str(lo)] = float(nll[:, lo - 1:hi].mean())
        lo *= 2
    return out


def heldout_loss(pm: "Provisioned", window: int, longest: int | None = None) -> tuple[float | None, dict[str, Any]]:
    """Mean held-out NLL at ``window`` (None if out of time) and its protocol."""
    ids = _eval_ids(pm, longest or window)
    batch = max(1, pm.eval_cfg.batch_size * pm.train_cfg.seq_len // window)
    nll = window_nll(pm.module, ids, window, pm.device, batch, pm.deadline, pm.train_cfg.autocast)
    protocol = {"split": "test", "eval_tokens": int(len(ids)), "window": window,
                "windows": (len(ids) - 1) // window, "scored": "every target of disjoint windows"}
    return (float(nll.mean()) if nll is not None else None), protocol


def _stop_result(pm: "Provisioned", metrics: dict[str, Any], protocol: dict[str, Any]) -> Result | None:
    """The result of a run that did not give a model to evaluate: a leak found before training (never trained),
    or training stopped by memory or time."""
    if pm.preflight is not None:
        protocol["causality"] = {"fresh": pm.preflight.to_dict()}
        return Result(metrics={"causality_max_delta": pm.preflight.max_delta}, protocol=protocol, status="leak",
                      reason=pm.preflight.message(pm.cell.model), leak=True, target_section=_section(pm))
    tr = pm.train
    if tr.stop is None:
        return None
    subject = f"{pm.cell.model} at seq_len {pm.train_cfg.seq_len:,}"
    return Result(metrics=metrics, protocol=protocol, status=tr.stop, reason=f"{subject}: {tr.stop_reason}",
                  target_section=_section(pm))


def stability(pm: "Provisioned") -> Result:
    """The stability record of one (model, length, seed): the training facts plus the held-out loss at L."""
    tcfg = pm.train_cfg
    protocol: dict[str, Any] = {
        "seq_len": tcfg.seq_len, "batch_size": tcfg.batch_size, "tokens_per_step": tcfg.tokens_per_step,
        "steps_planned": tcfg.steps, "spikes": f"loss > {SPIKE_FACTOR} x median of the previous {SPIKE_WINDOW}",
        "divergence": "the first non-finite loss or gradient norm stops training (so at most one is counted)",
        "memory": (pm.train.peak_memory or {}).get("kind"), "device": str(pm.device),
        "checkpointing": pm.train.checkpointing, "autocast": tcfg.autocast,
        "long_context_claim": bool(getattr(pm.spec, "long_context", False)),
    }
    base = recipe(pm.cell)
    if tcfg.tokens_per_step != base.tokens_per_step:
        protocol["note"] = (f"tokens per step {tcfg.tokens_per_step:,} differ from the recipe's "
                            f"{base.tokens_per_step:,}: seq_len exceeds it (batch 1)")
    if pm.memory_prediction is not None:
        protocol["memory_prediction"] = pm.memory_prediction.to_dict()
    metrics = training_metrics(pm.train)
    stopped = _stop_result(pm, metrics, protocol)
    if stopped is not None:
        return stopped
    try:
        loss, eval_protocol = heldout_loss(pm, tcfg.seq_len)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        return Result(metrics=metrics, protocol=protocol, status="oom", target_section=_section(pm),
                      reason=f"{pm.cell.model} at seq_len {tcfg.seq_len:,}: out of memory in held-out evaluation")
    protocol["heldout"] = eval_protocol
    if loss is None:
        return Result(metrics=metrics, protocol=protocol, status="timeout", target_section=_section(pm),
                      reason=f"{pm.cell.model} at seq_len {tcfg.seq_len:,}: ran out of time in held-out evaluation")
    metrics["heldout_loss"] = loss
    metrics["heldout_ppl"] = math.exp(loss) if math.isfinite(loss) else loss
    if not math.isfinite(loss):
        return Result(metrics=metrics, protocol=protocol, status="nonfinite", target_section=_section(pm),
                      reason=f"{pm.cell.model} at seq_len {tcfg.seq_len:,}: held-out loss is {loss}")
    if loss < 0:
        raise AssertionError(f"held-out NLL {loss} < 0 is impossible: a bug in the evaluation, not a result")
    return Result(metrics=metrics, protocol=protocol, target_section=_section(pm))


def _guard(pm: "Provisioned"):
    """The causality guard on the trained model at its training length and evaluation batch, on the first held-out
    windows (as ``perplexity.guard_model`` does at its own shape)."""
    L = pm.train_cfg.seq_len
    ids = _eval_ids(pm, L)
    n = max(1, min(pm.eval_cfg.batch_size, (len(ids) - 1) // L))
    probe = torch.as_tensor(np.asarray(ids[: n * L], dtype=np.int64)).reshape(n, L)
    return check_causality(pm.module, pm.tokenizer.vocab_size, seq_len=L, batch=n, ids=probe)


def extrapolation_lengths(pm: "Provisioned") -> tuple[list[int], dict[str, str]]:
    """The lengths to evaluate (L, 2L, 4L, 8L where the architecture and the split allow) and why others are not."""
    L = pm.train_cfg.seq_len
    split = len(pm.ids("test"))
    lengths, skipped = [], {}
    for f in EXTRAPOLATION_FACTORS:
        w = f * L
        if f > 1 and not getattr(pm.spec, "extrapolates", True):
            skipped[f"x{f}"] = f"{pm.cell.model} cannot run inputs longer than its training length"
        elif pm.spec.max_seq_len is not None and w > pm.spec.max_seq_len:
            skipped[f"x{f}"] = f"{pm.cell.model} supports at most {pm.spec.max_seq_len} positions"
        elif w + 1 > split:
            skipped[f"x{f}"] = f"the test split has {split:,} tokens, fewer than one window of {w:,}"
        else:
            lengths.append(w)
    return lengths, skipped


def extrapolation(pm: "Provisioned") -> Result:
    """Perplexity at L, 2L, 4L, 8L on the same held-out tokens, each relative to L, and the loss by position
    bucket at every evaluated length (how the loss falls as more context is visible)."""
    from harness.measure.perplexity import unigram_nll

    L = pm.train_cfg.seq_len
    protocol: dict[str, Any] = {"train_seq_len": L, "factors": list(EXTRAPOLATION_FACTORS), "device": str(pm.device),
                                "position_buckets": "mean NLL by tokens of context visible (p + 1), powers of two"}
    stopped = _stop_result(pm, {}, protocol)
    if stopped is not None:
        return stopped
    if pm.diverged:
        return Result(protocol=protocol, status="diverged", target_section=_section(pm),
                      reason=f"{pm.cell.model} at seq_len {L:,} diverged at step {pm.train.diverged_step}: "
                             f"nothing to extrapolate")
    guard = _guard(pm)
    protocol["causality"] = {"trained": guard.to_dict()}
    if guard.leak:  # a leaky model's perplexity is not one: no number is reported
        return Result(metrics={"causality_max_delta": guard.max_delta}, protocol=protocol, status="leak",
                      reason=guard.message(pm.cell.model), leak=True, target_section=_section(pm))
    lengths, skipped = extrapolation_lengths(pm)
    ids = _eval_ids(pm, max(lengths))
    protocol.update(eval_tokens=int(len(ids)), split="test", not_evaluated=skipped)
    metrics: dict[str, Any] = {"causality_max_delta": guard.max_delta}
    buckets: dict[str, dict[str, float]] = {}
    for w in lengths:
        f = w // L
        batch = max(1, pm.eval_cfg.batch_size * L // w)
        try:
            nll = window_nll(pm.module, ids, w, pm.device, batch, pm.deadline, pm.train_cfg.autocast)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            skipped[f"x{f}"] = f"out of memory evaluating windows of {w:,}"
            break
        if nll is None:
            return Result(metrics=metrics, protocol=protocol, status="timeout", target_section=_section(pm),
                          reason=f"{pm.cell.model}: ran out of time evaluating windows of {w:,}")
        mean = float(nll.mean())
        metrics[f"ppl_x{f}"] = math.exp(mean) if math.isfinite(mean) else mean
        buckets[f"x{f}"] = position_buckets(nll)
        if f > 1 and "ppl_x1" in metrics:
            metrics[f"ppl_x{f}_over_x1"] = metrics[f"ppl_x{f}"] / metrics["ppl_x1"]
    if "ppl_x1" not in metrics:
        return Result(metrics=metrics, protocol=protocol, status="oom", target_section=_section(pm),
                      reason=f"{pm.cell.model}: out of memory evaluating at its training length {L:,}")
    metrics["position_nll"] = buckets
    first = buckets["x1"]
    metrics["context_gain_nats"] = next(iter(first.values())) - list(first.values())[-1]
    metrics["unigram_ppl"] = math.exp(unigram_nll(pm.ids("train"), ids, pm.tokenizer.vocab_size))
    metrics["ppl_over_unigram"] = metrics["ppl_x1"] / metrics["unigram_ppl"]
    bad = [f"ppl_x{w // L}" for w in lengths if f"ppl_x{w // L}" in metrics
           and not (math.isfinite(metrics[f"ppl_x{w // L}"]) and metrics[f"ppl_x{w // L}"] >= 1.0)]
    if bad:
        if any(math.isfinite(metrics[k]) for k in bad):
            raise AssertionError(f"perplexity below 1 ({bad}) is impossible: a bug in the evaluation")
        return Result(metrics=metrics, protocol=protocol, status="nonfinite", target_section=_section(pm),
                      reason=f"{pm.cell.model}: non-finite held-out loss at {', '.join(bad)}")
    return Result(metrics=metrics, protocol=protocol, target_section=_section(pm), leak=False)
