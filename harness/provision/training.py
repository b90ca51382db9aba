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
    wall_s: float = 0.0
    cached: bool = False

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


def train(
    model: nn.Module,
    train_ids: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    progress: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train in place. Stops at the first non-finite loss or gradient norm and marks the run diverged."""
    model.to(device).train()
    data = torch.from_numpy(np.ascontiguousarray(train_ids, dtype=np.int64))
    offsets = batch_offsets(len(data), cfg, seed)
    window = torch.arange(cfg.seq_len + 1)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    result = TrainResult(steps=0, tokens=0)
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        idx = torch.from_numpy(offsets[step]).unsqueeze(1) + window
        chunk = data[idx].to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lv, gv = float(loss.detach()), float(gnorm)
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
    result.wall_s = time.perf_counter() - t0
    model.eval()
    return result
