"""User models written to leak future tokens in different ways (and honest ones), for the causality guard's tests.

Every leaky model here is declared causal (as a careless user would); each must end as status ``leak``, never
``passed``. Each is a causal toy (embedding -> causal depthwise conv -> head) plus one way of seeing the future.
"""
from __future__ import annotations

import torch
from torch import nn

from harness.models import ModelConfig, ModelSpec
from tests.toys import CausalToy


class _Leaky(CausalToy):
    def leak(self, ids: torch.Tensor, h: torch.Tensor) -> torch.Tensor:  # (B, T, d) added to the hidden state
        raise NotImplementedError

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        return self.head(h + torch.tanh(self.mix(h)) + self.leak(ids, h))


def _next(h: torch.Tensor) -> torch.Tensor:
    """h[t + 1] at position t (zero at the end)."""
    return torch.cat([h[:, 1:], torch.zeros_like(h[:, :1])], dim=1)


class NextToken(_Leaky):
    def leak(self, ids, h):
        return _next(h)


class SequenceMean(_Leaky):
    def leak(self, ids, h):
        return h.mean(dim=1, keepdim=True).expand_as(h)


class LastTokenOnly(_Leaky):
    def leak(self, ids, h):
        return h[:, -1:].expand_as(h)


class TinyLeak(_Leaky):
    """A 1e-6 leak: far below any loss difference, but a dependence on the future all the same."""

    def leak(self, ids, h):
        return 1e-6 * _next(h)


class BeyondLength(_Leaky):
    """Leaks only for sequences longer than 64 tokens (a guard probing 64 tokens never sees it)."""

    def leak(self, ids, h):
        return _next(h) if ids.shape[1] > 64 else torch.zeros_like(h)


class TwoSidedConv(CausalToy):
    """A centred convolution: position t reads t + 1 (the classic mistake)."""

    def mix(self, h):
        pad = (self.k - 1) // 2
        h = nn.functional.pad(h.transpose(1, 2), (pad, self.k - 1 - pad))
        return self.conv(h).transpose(1, 2)


class EvalOnly(_Leaky):
    def leak(self, ids, h):
        return torch.zeros_like(h) if self.training else _next(h)


class TrainOnly(_Leaky):
    """Honest at evaluation, but trains through the future: its weights are not those of a causal model."""

    def leak(self, ids, h):
        return _next(h) if self.training else torch.zeros_like(h)


class OddPositions(_Leaky):
    """Only odd positions see their next token (a guard cutting at a few even positions misses it)."""

    def leak(self, ids, h):
        mask = torch.zeros(1, h.shape[1], 1, dtype=h.dtype, device=h.device)
        mask[:, 1::2] = 1.0
        return mask * _next(h)


class Float32Only(_Leaky):
    """Leaks only when run in float32 (a guard on a float64 copy misses it)."""

    def leak(self, ids, h):
        return _next(h) if h.dtype == torch.float32 else torch.zeros_like(h)


class AcrossRows(_Leaky):
    """Row b sees row b + 1: in batched evaluation that row is the next window, i.e. the future."""

    def leak(self, ids, h):
        return torch.roll(h, shifts=-1, dims=0)


class CausalRNN(nn.Module):
    """Honest: a GRU reads left to right."""

    def __init__(self, vocab_size: int, d: int = 48) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, d)
        self.rnn = nn.GRU(d, d, batch_first=True)
        self.head = nn.Linear(d, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.emb(ids))[0])


def _spec(name: str, cls: type[nn.Module]) -> ModelSpec:
    def build(cfg: ModelConfig) -> nn.Module:
        return cls(cfg.vocab_size)

    build.__name__ = f"build_{name}"
    return ModelSpec(name=name, build=build, causal=True, default=False, family="toy")


LEAKY = {
    "next_token": NextToken, "sequence_mean": SequenceMean, "last_token_only": LastTokenOnly, "tiny_leak": TinyLeak,
    "beyond_64": BeyondLength, "two_sided_conv": TwoSidedConv, "eval_only": EvalOnly, "train_only": TrainOnly,
    "odd_positions": OddPositions, "float32_only": Float32Only, "across_rows": AcrossRows,
}
HONEST = {"rnn": CausalRNN, "causal_conv": CausalToy}
SPECS = {name: _spec(name, cls) for name, cls in {**LEAKY, **HONEST}.items()}
globals().update({f"{name}_spec": spec for name, spec in SPECS.items()})
