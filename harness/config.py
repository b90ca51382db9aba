"""Budgets: how every model is trained (``TrainConfig``) and evaluated (``EvalConfig``) at each budget level.

Why two configs: ``TrainConfig`` shapes the weights, so it is hashed into the weight-cache key; ``EvalConfig`` does
not, so changing how a model is scored (more tokens, another window) never retrains it. Why here and not in tests:
every benchmark that trains must train the same way for every model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any


class BudgetError(ValueError):
    """A budget that cannot be met (e.g. one batch alone exceeds the token budget); the message names the fix."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines trained weights (with the model, data and seed)."""

    seq_len: int
    batch_size: int
    train_tokens: int  # tokens seen in training: steps = train_tokens // (batch_size * seq_len)
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_frac: float = 0.05
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        steps = self.train_tokens // self.tokens_per_step
        if steps < 1:
            raise BudgetError(
                f"one batch ({self.batch_size} x {self.seq_len:,} = {self.tokens_per_step:,} tokens) exceeds the "
                f"training budget of {self.train_tokens:,} tokens: use a larger --budget or shorter --seq-lens"
            )
        return steps

    def at_seq_len(self, seq_len: int) -> "TrainConfig":
        """The same recipe at another length, with the same tokens per optimizer step where possible (the batch
        shrinks as the length grows, down to 1), so lengths differ in context only, not in steps or tokens."""
        if seq_len == self.seq_len:
            return self
        batch = max(1, self.tokens_per_step // seq_len)
        return dataclasses.replace(self, seq_len=seq_len, batch_size=batch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EvalConfig:
    """How a trained model is scored; never part of the weight-cache key."""

    eval_tokens: int | None = None  # cap on held-out tokens scored (None = the whole split)
    batch_size: int = 16
    window: int | None = None  # None: the training sequence length
    stride: int | None = None  # None: the window (disjoint windows)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DownstreamConfig:
    """How much of each downstream task a budget scores, and the fine-tuning recipe's size at that budget.

    Why per budget: a smoke run must prove the whole pipeline on every task in minutes on a CPU, so it scores the
    first ``limit`` examples of each task (a group such as MMLU splits its limit over its subjects, at least one
    question each, so every subject is still asked), and fine-tunes briefly on one fold; ``full`` scores everything
    with the documented recipe. ``--limit N`` overrides ``limit`` (and then joins the cell's identity). Never part
    of the weight-cache key.
    """

    limit: int | None  # examples per task (split over the subjects of a group); None = every example
    finetune_limit: int | None  # dev examples the fine-tuning protocol splits into folds; None = all
    finetune_steps: int = 300
    finetune_seeds: tuple[int, ...] = (0, 1, 2)
    finetune_folds: tuple[int, ...] | None = None  # folds run (of 5); None = all
    controls_examples: int = 200  # synthetic-task questions for the controls

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Budget:
    """A budget level: the training recipe, the evaluation protocol, and which size preset models use."""

    name: str
    train: TrainConfig
    eval: EvalConfig
    preset: str  # the key of ``ModelSpec.presets`` (micro reuses the smoke sizes)
    about: str = ""
    downstream: DownstreamConfig = DownstreamConfig(limit=None, finetune_limit=None)


BUDGETS: dict[str, Budget] = {
    b.name: b
    for b in (
        Budget("micro", TrainConfig(seq_len=64, batch_size=8, train_tokens=32_768, lr=3e-3),
               EvalConfig(eval_tokens=8_192), preset="smoke",
               about="seconds per model: proves the plumbing in CI and harness tests, not the models",
               downstream=DownstreamConfig(limit=8, finetune_limit=40, finetune_steps=8, finetune_seeds=(0,),
                                           finetune_folds=(0,), controls_examples=64)),
        Budget("smoke", TrainConfig(seq_len=128, batch_size=16, train_tokens=400_000),
               EvalConfig(eval_tokens=65_536), preset="smoke",
               about="minutes on 2 CPU cores for the default suite; proves the pipeline, gives a first ordering",
               downstream=DownstreamConfig(limit=50, finetune_limit=200, finetune_steps=40, finetune_seeds=(0, 1),
                                           finetune_folds=(0,), controls_examples=200)),
        Budget("small", TrainConfig(seq_len=256, batch_size=32, train_tokens=8_000_000, lr=1e-3),
               EvalConfig(eval_tokens=1_000_000), preset="small",
               about="a real (if small) comparison: tens of minutes per model on CPU, seconds on a GPU",
               downstream=DownstreamConfig(limit=500, finetune_limit=None, finetune_steps=300)),
        Budget("full", TrainConfig(seq_len=512, batch_size=32, train_tokens=200_000_000, lr=6e-4),
               EvalConfig(eval_tokens=None), preset="full",
               about="the numbers worth publishing; GPU territory",
               downstream=DownstreamConfig(limit=None, finetune_limit=None, finetune_steps=300)),
    )
}
BUDGET_NAMES = tuple(BUDGETS)


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise ValueError(f"unknown budget {name!r}; valid budgets: {', '.join(BUDGET_NAMES)}") from None


def stable_hash(obj: Any, length: int = 16) -> str:
    """A content hash of a JSON-able object (sorted keys), used as cache key and record ``config_hash``."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
