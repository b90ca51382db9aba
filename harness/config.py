"""Budgets: one set of training/evaluation hyperparameters per budget level, identical for every model.

Why here and not in tests: every benchmark that trains must train the same way, and the config is hashed into
the cache key, so a change here invalidates cached weights instead of silently reusing them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

BUDGET_NAMES = ("smoke", "small", "full")


@dataclass(frozen=True)
class TrainConfig:
    seq_len: int
    batch_size: int
    train_tokens: int  # tokens seen in training (steps = train_tokens // (batch_size * seq_len))
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_frac: float = 0.05
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_tokens: int | None = None  # cap on held-out tokens scored (None = the whole split)
    eval_batch_size: int = 16

    @property
    def steps(self) -> int:
        return max(1, self.train_tokens // (self.batch_size * self.seq_len))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


BUDGETS: dict[str, TrainConfig] = {
    # smoke: minutes on 2 CPU cores for the whole default suite; proves the pipeline, not the architecture.
    "smoke": TrainConfig(seq_len=128, batch_size=16, train_tokens=400_000, eval_tokens=65_536),
    # small: a real (if small) comparison; tens of minutes per model on CPU, seconds on a GPU.
    "small": TrainConfig(seq_len=256, batch_size=32, train_tokens=8_000_000, lr=1e-3, eval_tokens=1_000_000),
    # full: the numbers worth publishing; GPU territory.
    "full": TrainConfig(seq_len=512, batch_size=32, train_tokens=200_000_000, lr=6e-4, eval_tokens=None),
}


def budget_config(name: str) -> TrainConfig:
    try:
        return BUDGETS[name]
    except KeyError:
        raise ValueError(f"unknown budget {name!r}; valid budgets: {', '.join(BUDGET_NAMES)}") from None


def stable_hash(obj: Any, length: int = 16) -> str:
    """A content hash of a JSON-able object (sorted keys), used as cache key and record ``config_hash``."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
