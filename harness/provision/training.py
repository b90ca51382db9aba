"""One training loop for every model: AdamW, warmup + cosine, clipping, seeded data order, divergence stop.

Why one loop: "is architecture X better than a Transformer?" is only answerable when everything but the
architecture is held fixed. Every hyperparameter is in ``TrainConfig`` and lands in the record.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from harness.config import TrainConfig


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
               grad_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss, backward and clipping of one step (the caller steps ``opt`` once the numbers are finite).
    One function, so that speed and memory are measured on exactly the step the loop trains with."""
    logits = model(x)
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach(), torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)


def train(
    model: nn.Module,
    train_ids: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    progress: Callable[[int, float], None] | None = None,
    callback: Callable[[int, nn.Module], dict | None] | None = None,
) -> TrainResult:
    """Train in place. Stops at the first non-finite loss or gradient norm and marks the run diverged.

    ``callback(steps_done, model)`` runs after every optimizer step (e.g. a held-out evaluation every k steps); a
    dict it returns is kept in ``TrainResult.evals`` with the step, tokens and training seconds so far. Its time is
    not training time. It must leave the weights alone (it may switch the model to eval mode: the loop switches it
    back)."""
    model.to(device).train()
    data = torch.from_numpy(np.ascontiguousarray(train_ids, dtype=np.int64))
    offsets = batch_offsets(len(data), cfg, seed)
    window = torch.arange(cfg.seq_len + 1)
    opt = make_optimizer(model, cfg)
    result = TrainResult(steps=0, tokens=0)
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        idx = torch.from_numpy(offsets[step]).unsqueeze(1) + window
        chunk = data[idx].to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        loss, gnorm = train_step(model, opt, x, y, cfg.grad_clip)
        lv, gv = float(loss), float(gnorm)
        result.losses.append(lv)
        result.grad_norms.append(gv)
        if not (math.isfinite(lv) and math.isfinite(gv)):
            result.diverged, result.diverged_step = True, step
            break
        opt.step()
        result.steps = step + 1
        result.tokens += x.numel()
        if progress is not None:
            progress(step, lv)
        if callback is not None:
            t_cb = time.perf_counter()
            out = callback(result.steps, model)
            model.train()
            if out is not None:
                train_s = t_cb - t0 - result.eval_wall_s
                result.evals.append({"step": result.steps, "tokens": result.tokens, "train_wall_s": train_s, **out})
            result.eval_wall_s += time.perf_counter() - t_cb
    result.wall_s = time.perf_counter() - t0 - result.eval_wall_s
    model.eval()
    return result
