"""One training loop for every model: AdamW, warmup + cosine, clipping, seeded data order, divergence stop.

Why one loop: "is architecture X better than a Transformer?" is only answerable when everything but the
architecture is held fixed. Every hyperparameter is in ``TrainConfig`` and lands in the record.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from harness.config import TrainConfig
from harness.provision.memory import PeakMemory, enable_checkpointing, is_out_of_memory

# A batch source for data that is not a token stream (the synthetic memory tasks): step -> (inputs (B, T),
# targets (B, T), loss mask (B, T) bool or None: only masked targets are scored and averaged).
BatchSource = Callable[[int], tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]]

# Why training stopped early, when it did (None: it ran every step).
STOPS = ("diverged", "oom", "timeout")


@dataclass
class TrainResult:
    steps: int
    tokens: int
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    diverged: bool = False
    diverged_step: int | None = None
    wall_s: float = 0.0  # training time, without the time spent in ``callback`` (evaluations)
    cached: bool = False
    # What ``callback`` returned at the steps it evaluated, each with the step, tokens and training seconds so far.
    evals: list[dict] = field(default_factory=list)
    eval_wall_s: float = 0.0  # time spent in ``callback``
    stop: str | None = None  # one of STOPS, or None when every step ran
    stop_step: int | None = None  # the step that did not complete
    stop_reason: str | None = None
    step_time_s: float | None = None  # median wall time of an optimizer step (the first, warm-up step excluded)
    peak_memory: dict | None = None  # PeakMemory.result(): CUDA allocated/reserved, or process RSS on CPU
    checkpointing: str | None = None  # how activation checkpointing was applied (cfg.grad_checkpoint)

    @property
    def final_loss(self) -> float | None:
        tail = self.losses[-10:]
        return float(np.mean(tail)) if tail else None

    def summary(self) -> dict:
        """What goes into a record (curves included: they are small and make divergence auditable)."""
        d = asdict(self)
        d["final_loss"] = self.final_loss
        d["tokens_per_s"] = (self.tokens / self.wall_s) if self.wall_s > 0 and not self.cached else None
        return d


class TrainingStopped(RuntimeError):
    """Training stopped early for a reason that is a result, not a bug (out of memory, out of time). Raised by the
    provisioner unless its caller asked for stopped runs (``stopped_ok``); carries the partial training log."""

    def __init__(self, result: TrainResult, subject: str) -> None:
        self.result = result
        self.status = result.stop or "error"
        super().__init__(f"{subject}: {result.stop_reason}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup then cosine decay to ``min_lr_ratio * lr``."""
    total = cfg.steps
    warm = max(1, int(round(cfg.warmup_frac * total)))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


def batch_offsets(n_tokens: int, cfg: TrainConfig, seed: int) -> np.ndarray:
    """Seeded random window starts, shape (steps, batch): the data order depends on the seed only."""
    high = n_tokens - cfg.seq_len - 1
    if high <= 0:
        raise ValueError(f"training split has {n_tokens} tokens, fewer than seq_len + 1 = {cfg.seq_len + 1}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, high, size=(cfg.steps, cfg.batch_size))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with decay on matrices only: the loop's optimizer (also what throughput and memory benchmarks step)."""
    return torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               grad_clip: float, mask: torch.Tensor | None = None,
               autocast: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss, backward and clipping of one step (the caller steps ``opt`` once the numbers are finite).
    One function, so that speed and memory are measured on exactly the step the loop trains with. Without a
    ``mask`` the loss is the plain next-token cross-entropy; with one, only the masked targets count (the synthetic
    tasks). ``autocast``: a context the forward and loss run in (bf16 on CUDA), else none."""
    with autocast if autocast is not None else nullcontext():
        logits = model(x)
        flat = logits.reshape(-1, logits.size(-1)).float()
        if mask is None:
            loss = nn.functional.cross_entropy(flat, y.reshape(-1))
        else:
            keep = mask.reshape(-1)
            loss = nn.functional.cross_entropy(flat[keep], y.reshape(-1)[keep])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach(), torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)


def window_batches(train_ids: np.ndarray, cfg: TrainConfig, seed: int, device: torch.device) -> BatchSource:
    """The token-stream source: seeded random windows of ``seq_len + 1`` tokens, every target scored."""
    data = torch.from_numpy(np.ascontiguousarray(train_ids, dtype=np.int64))
    offsets = batch_offsets(len(data), cfg, seed)
    window = torch.arange(cfg.seq_len + 1)

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor, None]:
        idx = torch.from_numpy(offsets[step]).unsqueeze(1) + window
        chunk = data[idx].to(device)
        return chunk[:, :-1], chunk[:, 1:], None

    return batch


def train(
    model: nn.Module,
    train_ids: np.ndarray | None,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    progress: Callable[[int, float], None] | None = None,
    callback: Callable[[int, nn.Module], dict | None] | None = None,
    *,
    batches: BatchSource | None = None,
    deadline: float | None = None,
) -> TrainResult:
    """Train in place. Stops at the first non-finite loss or gradient norm and marks the run diverged.

    ``callback(steps_done, model)`` runs after every optimizer step (e.g. a held-out evaluation every k steps); a
    dict it returns is kept in ``TrainResult.evals`` with the step, tokens and training seconds so far. Its time is
    not training time. It must leave the weights alone (it may switch the model to eval mode: the loop switches it
    back).

    ``batches`` replaces the token-stream windows of ``train_ids`` (the synthetic tasks: inputs, targets and a loss
    mask). ``deadline`` (``time.monotonic()`` seconds) stops training between steps once passed (``stop="timeout"``).
    Running out of memory in a step stops it too (``stop="oom"``): a result to record, not a crash. Without a mask the
    loss is exactly the plain next-token cross-entropy (the perplexity path is unchanged).
    """
    model.to(device).train()
    if batches is None:
        batches = window_batches(train_ids, cfg, seed, device)
    opt = make_optimizer(model, cfg)
    result = TrainResult(steps=0, tokens=0)
    if cfg.grad_checkpoint:
        result.checkpointing = enable_checkpointing(model)
    step_times: list[float] = []
    t0 = time.perf_counter()
    with PeakMemory(device) as peak:
        for step in range(cfg.steps):
            if deadline is not None and time.monotonic() > deadline:
                result.stop, result.stop_step = "timeout", step
                result.stop_reason = f"ran out of time before training step {step} of {cfg.steps}"
                break
            ts = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            try:
                lv, gv, n_tokens = _step(model, opt, batches(step), cfg, device)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc):
                    raise
                opt.zero_grad(set_to_none=True)
                result.stop, result.stop_step = "oom", step
                result.stop_reason = f"out of memory in training step {step}: {str(exc).splitlines()[0][:200]}"
                break
            result.losses.append(lv)
            result.grad_norms.append(gv)
            if not (math.isfinite(lv) and math.isfinite(gv)):
                result.diverged, result.diverged_step = True, step
                result.stop, result.stop_step = "diverged", step
                result.stop_reason = f"non-finite loss ({lv}) or gradient norm ({gv}) at step {step}"
                break
            opt.step()
            result.steps = step + 1
            result.tokens += n_tokens
            step_times.append(time.perf_counter() - ts)
            if progress is not None:
                progress(step, lv)
            if callback is not None:
                t_cb = time.perf_counter()
                out = callback(result.steps, model)
                model.train()
                if out is not None:
                    train_s = t_cb - t0 - result.eval_wall_s
                    result.evals.append({"step": result.steps, "tokens": result.tokens, "train_wall_s": train_s,
                                         **out})
                result.eval_wall_s += time.perf_counter() - t_cb
    result.wall_s = time.perf_counter() - t0 - result.eval_wall_s
    timed = step_times[1:] or step_times
    result.step_time_s = float(np.median(timed)) if timed else None
    result.peak_memory = peak.result()
    model.eval()
    return result


def _step(model: nn.Module, opt: torch.optim.Optimizer, batch, cfg: TrainConfig,
          device: torch.device) -> tuple[float, float, int]:
    """One optimizer step's forward and backward (the optimizer update is the caller's): loss, grad norm, tokens."""
    x, y, mask = batch
    loss, gnorm = train_step(model, opt, x, y, cfg.grad_clip, mask, _autocast(cfg, device))
    return float(loss), float(gnorm), x.numel()


def _autocast(cfg: TrainConfig, device: torch.device):
    """bf16 autocast of forward and loss when the recipe asks for it (the backward runs outside, as it should)."""
    if cfg.autocast is None:
        return nullcontext()
    if cfg.autocast != "bf16":
        raise ValueError(f"autocast {cfg.autocast!r}: only 'bf16' is supported")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
