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
    # Memory techniques (options, recorded): bf16 autocast of forward and loss (CUDA), activation checkpointing.
    autocast: str | None = None  # None (fp32) | "bf16"
    grad_checkpoint: bool = False

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
        """The recipe as data (weights keys, records, baselines). The memory techniques appear only when on: a
        plain recipe keeps the dict (so the weights key and the gated protocol) it had before they existed."""
        d = dataclasses.asdict(self)
        for name, off in (("autocast", None), ("grad_checkpoint", False)):
            if d[name] == off:
                del d[name]
        return d


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
class TaskBudget:
    """How the synthetic memory tasks train and are scored at a budget (``train.lr`` is replaced by each swept lr).

    Why a sweep: architectures differ in the learning rate they need on these tasks, and the literature (Zoology,
    the Mamba paper) reports the best of a small sweep; one fixed lr would measure the lr, not the architecture.
    """

    train: TrainConfig  # seq_len here is only the default; a cell trains at its own seq_len, same tokens per step
    lrs: tuple[float, ...]
    eval_sequences: int = 256  # held-out sequences scored per evaluated length
    eval_factors: tuple[int, ...] = (1, 2, 4)  # evaluated lengths, as multiples of the training length

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
    # Long-context sweep: the default training lengths and the recipe (its tokens per step are at least the longest
    # default length, so every length of the sweep trains on the same tokens per step; None: ``train``).
    long_seq_lens: tuple[int, ...] = ()
    long_train: TrainConfig | None = None
    # Synthetic memory tasks: one recipe for every model, and the learning rates of the sweep.
    tasks: "TaskBudget | None" = None

    @property
    def long_recipe(self) -> TrainConfig:
        return self.long_train or self.train


BUDGETS: dict[str, Budget] = {
    b.name: b
    for b in (
        Budget("micro", TrainConfig(seq_len=64, batch_size=8, train_tokens=32_768, lr=3e-3),
               EvalConfig(eval_tokens=8_192), preset="smoke",
               about="seconds per model: proves the plumbing in CI and harness tests, not the models",
               long_seq_lens=(64, 256),
               tasks=TaskBudget(TrainConfig(seq_len=64, batch_size=16, train_tokens=32_768), lrs=(3e-3,),
                                eval_sequences=256, eval_factors=(1, 2)),
               downstream=DownstreamConfig(limit=8, finetune_limit=40, finetune_steps=8, finetune_seeds=(0,),
                                           finetune_folds=(0,), controls_examples=64)),
        Budget("smoke", TrainConfig(seq_len=128, batch_size=16, train_tokens=400_000),
               EvalConfig(eval_tokens=65_536), preset="smoke",
               about="minutes on 2 CPU cores for the default suite; proves the pipeline, gives a first ordering",
               long_seq_lens=(256, 1024),
               tasks=TaskBudget(TrainConfig(seq_len=128, batch_size=16, train_tokens=300_000), lrs=(1e-3, 3e-3)),
               downstream=DownstreamConfig(limit=50, finetune_limit=200, finetune_steps=40, finetune_seeds=(0, 1),
                                           finetune_folds=(0,), controls_examples=200)),
        Budget("small", TrainConfig(seq_len=256, batch_size=32, train_tokens=8_000_000, lr=1e-3),
               EvalConfig(eval_tokens=1_000_000), preset="small",
               about="a real (if small) comparison: tens of minutes per model on CPU, seconds on a GPU",
               long_seq_lens=(2_048, 8_192, 32_768),
               long_train=TrainConfig(seq_len=2_048, batch_size=16, train_tokens=8_000_000, lr=1e-3),
               tasks=TaskBudget(TrainConfig(seq_len=256, batch_size=32, train_tokens=4_000_000, lr=1e-3),
                                lrs=(3e-4, 1e-3, 3e-3), eval_sequences=1_024, eval_factors=(1, 2, 4, 8)),
               downstream=DownstreamConfig(limit=500, finetune_limit=None, finetune_steps=300)),
        Budget("full", TrainConfig(seq_len=512, batch_size=32, train_tokens=200_000_000, lr=6e-4),
               EvalConfig(eval_tokens=None), preset="full",
               about="the numbers worth publishing; GPU territory",
               long_seq_lens=(8_192, 32_768, 131_072, 524_288, 1_048_576),
               long_train=TrainConfig(seq_len=8_192, batch_size=128, train_tokens=200_000_000, lr=6e-4),
               tasks=TaskBudget(TrainConfig(seq_len=512, batch_size=64, train_tokens=100_000_000, lr=6e-4),
                                lrs=(1e-4, 3e-4, 1e-3, 3e-3), eval_sequences=4_096,
                                eval_factors=(1, 2, 4, 8, 16)),
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
