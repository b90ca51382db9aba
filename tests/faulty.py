"""Broken user models and entries for tests/test_faults.py: each breaks one part of the model contract (ids (B, T)
→ float logits (B, T, vocab) from an ``nn.Module`` with parameters, built by ``build(cfg: ModelConfig)``), or
misbehaves only when evaluated (NaN, overflow), or is honest but noisy."""
from __future__ import annotations

import torch
from torch import nn

from harness.models import ModelConfig, ModelSpec
from tests.toys import CausalToy


class Reshaped(CausalToy):
    """A causal toy whose logits are cut to another shape: ``cut(logits)``."""

    def __init__(self, vocab_size: int, cut) -> None:
        super().__init__(vocab_size)
        self.cut = cut

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.cut(super().forward(ids))


def _spec(name: str, build) -> ModelSpec:
    return ModelSpec(name=name, build=build, causal=True, default=False, family="faulty")


vocab_minus_one = _spec("vocab-minus-one", lambda cfg: Reshaped(cfg.vocab_size, lambda x: x[..., :-1]))
one_row = _spec("one-row", lambda cfg: Reshaped(cfg.vocab_size, lambda x: x[:1]))
one_short = _spec("one-short", lambda cfg: Reshaped(cfg.vocab_size, lambda x: x[:, :-1]))
int_logits = _spec("int-logits", lambda cfg: Reshaped(cfg.vocab_size, lambda x: x.long()))


class NoParams(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, self.vocab_size)


no_params = _spec("no-params", lambda cfg: NoParams(cfg.vocab_size))
returns_none = _spec("returns-none", lambda cfg: None)

NOT_A_MODEL = 42
A_CLASS = CausalToy


def wrong_signature(vocab_size: int, d_model: int) -> nn.Module:
    return CausalToy(vocab_size, d_model)


class EvalOnly(CausalToy):
    """Trains normally; in eval mode its logits are ``bad(logits)`` (NaN, or so large the NLL overflows exp)."""

    def __init__(self, vocab_size: int, bad) -> None:
        super().__init__(vocab_size)
        self.bad = bad

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = super().forward(ids)
        return out if self.training else self.bad(out)


nan_in_eval = _spec("nan-in-eval", lambda cfg: EvalOnly(cfg.vocab_size, lambda x: x * float("nan")))
# Logits of 1e4 on one fixed wrong class: NLL of about 1e4 nats per token, far past exp's range (709).
overflow_in_eval = _spec("overflow-in-eval", lambda cfg: EvalOnly(
    cfg.vocab_size, lambda x: torch.zeros_like(x).index_fill(-1, torch.tensor([0]), 1e4)))


class Noisy(CausalToy):
    """Causal, plus noise from its own generator that no seed reset repeats: two runs on identical input differ
    by as much as a change of the future would. The guard must measure that noise first, not call it a leak."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__(vocab_size)
        self.gen = torch.Generator().manual_seed(1234)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = super().forward(ids)
        return out + 0.5 * torch.randn(out.shape, generator=self.gen)


def build_noisy(cfg: ModelConfig) -> nn.Module:
    return Noisy(cfg.vocab_size)
