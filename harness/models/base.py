"""What a model entry is: a spec (name, causality, size presets per budget) and a builder.

A built model is any ``nn.Module`` mapping token ids ``(B, T)`` (int64) to logits ``(B, T, V)``.
Presets of one budget are matched in *non-embedding* parameter count across models (see
``tests/test_models.py``), so comparisons are between equally sized sequence mixers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

BUDGETS = ("smoke", "small", "full")  # size presets (the "micro" budget trains the smoke sizes)


class PresetError(ValueError):
    """A model has no size preset for the requested budget; the message names the model, budget and presets."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything a builder needs. ``preset`` holds the architecture sizes for this budget."""

    vocab_size: int
    max_seq_len: int
    budget: str = "smoke"
    preset: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model family.

    causal: the model claims logits at t depend on tokens <= t only (checked by the causality guard).
    default: part of the default model set (leaky models never are).
    presets: budget -> size kwargs passed to ``build`` through ``ModelConfig.preset``. Empty: the builder takes
        no sizes (any budget). Non-empty: a budget without a preset is an error, never a silent fallback.
    notes: a sentence copied into every record (e.g. "slow reference scan on CPU").
    max_seq_len: the most positions the architecture supports (None: any length). Longer cells are skipped.
    code: extra modules (or packages) whose source determines trained weights besides the builder's own module
        (e.g. a kernel); their content is hashed into the weight-cache key.
    tokenizer: the tokenizer this model must be used with, whatever ``--tokenizer`` says (a checkpoint's own).
    pretrained: a local checkpoint folder: the model is loaded as is, never trained (``hf:PATH``).
    fixed_shape: a published architecture defined only at the budgets in ``presets`` (GPT-2 124M is not a smoke
        model): other budgets skip its cells with a reason instead of refusing the run.
    available: optional zero-argument check returning None when the model can be built here, else a one-line
        reason (a missing optional extra). Lets the harness list and skip such models without building them.
    long_context: the entry claims stable training at long sequence lengths. The long-context benchmark holds such a
        model to it: at every length it trains, no NaN/Inf and a final loss below its first (docs/longcontext.md).
    extrapolates: the built model accepts inputs longer than ``ModelConfig.max_seq_len`` (False for a learned
        position table sized to the training length): whether length extrapolation is measured at all.
    """

    name: str
    build: Callable[[ModelConfig], nn.Module]
    causal: bool = True
    default: bool = True
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: str = ""
    family: str = ""
    max_seq_len: int | None = None
    code: tuple[str, ...] = ()

    def preset_for(self, preset: str, budget: str | None = None) -> dict[str, Any]:
        """The size kwargs of ``preset``; ``PresetError`` naming the model and budget if it has none."""
        if not self.presets:
            return {}
        if preset not in self.presets:
            shown = budget or preset
            raise PresetError(f"model {self.name} has no size preset for budget {shown!r} (it has: "
                              f"{', '.join(self.presets)}); add one to its ModelSpec.presets or pick another --budget")
        return dict(self.presets[preset])
    available: Callable[[], str | None] | None = None
    tokenizer: str | None = None
    pretrained: str | None = None
    fixed_shape: bool = False
    long_context: bool = False
    extrapolates: bool = True

    def unavailable_reason(self) -> str | None:
        """None if this model can be built in this environment, else why not (one line, shown to the user)."""
        return self.available() if self.available is not None else None

    def config(self, vocab_size: int, max_seq_len: int, budget: str) -> ModelConfig:
        """``budget`` names the size preset (``Budget.preset``)."""
        return ModelConfig(vocab_size=vocab_size, max_seq_len=max_seq_len, budget=budget,
                           preset=self.preset_for(budget))


class ModelUnavailable(ImportError):
    """A registered model whose optional dependency is missing; the message names the extra to install."""


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Unique parameter counts: total and non-embedding.

    Embedding = parameters owned by ``nn.Embedding`` modules (token and position tables) plus an untied output
    head (a Linear named ``lm_head``/``head`` whose weight is not shared). Tied heads count once, as embedding.
    """
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb: set[int] = set()
    emb_count = 0
    for name, mod in model.named_modules():
        is_head = isinstance(mod, nn.Linear) and name.split(".")[-1] in ("lm_head", "head")
        if isinstance(mod, nn.Embedding) or is_head:
            for p in mod.parameters(recurse=False):
                if id(p) not in emb:
                    emb.add(id(p))
                    emb_count += p.numel()
    return {"total": total, "non_embedding": total - emb_count}


class LogitsOnly(nn.Module):
    """Adapts a Hugging Face causal LM (returns a ModelOutput) to the plain ids -> logits contract."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=ids, use_cache=False).logits
