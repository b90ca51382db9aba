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


CONTRACT_BATCH = 2
CONTRACT_LEN = 16


def build_checked(spec: ModelSpec, cfg: ModelConfig, name: str | None = None) -> nn.Module:
    """``spec.build(cfg)``, refusing anything that is not an ``nn.Module`` (a builder returning None)."""
    from harness.errors import ModelContractError

    module = spec.build(cfg)
    if not isinstance(module, nn.Module):
        raise ModelContractError(
            f"model {name or spec.name}: its builder returned {type(module).__name__}, not an nn.Module; a builder "
            f"must build and return the model: build(cfg: ModelConfig) -> nn.Module")
    return module


@torch.no_grad()
def check_output_contract(module: nn.Module, vocab_size: int, seq_len: int, name: str,
                          device: torch.device | str = "cpu") -> None:
    """Once per model, before any training, on a tiny batch: ids ``(2, T)`` (int64) must give floating-point
    logits ``(2, T, vocab_size)`` in train and eval mode, and the model must own trainable parameters.

    Why: a model returning ``(B, T, V-1)`` (or one position short, or one row) trains and evaluates without an
    error — cross-entropy only needs the last dimension to cover the targets most of the time — and its
    perplexity would be reported as a result. ``ModelContractError`` names the expected and the actual shape."""
    from harness.errors import ModelContractError

    if not any(p.requires_grad for p in module.parameters()):
        raise ModelContractError(f"model {name} has no trainable parameters: there is nothing to train (a model "
                                 f"must own its weights as nn.Parameters)")
    length = max(2, min(CONTRACT_LEN, seq_len))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (CONTRACT_BATCH, length), generator=gen).to(device)
    expected = (CONTRACT_BATCH, length, vocab_size)
    was_training = module.training
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}  # train mode updates BatchNorm stats
    try:
        for mode in ("train", "eval"):
            module.train(mode == "train")
            try:
                out = module(ids)
            except Exception as exc:
                first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
                raise ModelContractError(
                    f"model {name} failed on a tiny batch of ids {tuple(ids.shape)} ({mode} mode): "
                    f"{type(exc).__name__}: {first}") from None
            if not isinstance(out, torch.Tensor):
                raise ModelContractError(
                    f"model {name} returned {type(out).__name__} for ids {tuple(ids.shape)}, not a logits tensor: "
                    f"return logits (batch, length, vocab) (wrap a Hugging Face model in harness.models.LogitsOnly)")
            if tuple(out.shape) != expected:
                raise ModelContractError(
                    f"model {name} breaks the output contract: ids of shape {tuple(ids.shape)} gave logits of shape "
                    f"{tuple(out.shape)} ({mode} mode); expected (batch, length, vocab) = {expected}")
            if not out.is_floating_point():
                raise ModelContractError(
                    f"model {name} returned logits of dtype {str(out.dtype).removeprefix('torch.')}; expected "
                    f"floating-point logits (batch, length, vocab) = {expected}")
    finally:
        module.train(was_training)
        for name, b in module.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])
