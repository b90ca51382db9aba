"""Tiny models for testing the harness itself (fast enough to train at the smoke budget in a second)."""
from __future__ import annotations

import torch
from torch import nn

from harness.models import ModelConfig, ModelSpec


class CausalToy(nn.Module):
    """Embedding -> causal depthwise conv (left padding only) -> head: causal by construction."""

    def __init__(self, vocab_size: int, d: int = 64, k: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, d)
        self.conv = nn.Conv1d(d, d, k, groups=d)
        self.k = k
        self.head = nn.Linear(d, vocab_size)

    def mix(self, h: torch.Tensor) -> torch.Tensor:
        h = nn.functional.pad(h.transpose(1, 2), (self.k - 1, 0))
        return self.conv(h).transpose(1, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        return self.head(h + torch.tanh(self.mix(h)))


class LeakyToy(CausalToy):
    """Same, but the conv is centred: position t sees token t+1 — the bug the causality guard must catch."""

    def mix(self, h: torch.Tensor) -> torch.Tensor:
        pad = (self.k - 1) // 2
        h = nn.functional.pad(h.transpose(1, 2), (pad, self.k - 1 - pad))
        return self.conv(h).transpose(1, 2)


def build_causal(cfg: ModelConfig) -> nn.Module:
    return CausalToy(cfg.vocab_size)


def build_leaky(cfg: ModelConfig) -> nn.Module:
    return LeakyToy(cfg.vocab_size)


causal_spec = ModelSpec(name="toy-causal", build=build_causal, causal=True, default=False, family="toy")
leaky_declared_causal = ModelSpec(name="toy-leaky", build=build_leaky, causal=True, default=False, family="toy")
leaky_declared_bidir = ModelSpec(name="toy-bidir", build=build_leaky, causal=False, default=False, family="toy")
smoke_only_spec = ModelSpec(name="toy-smoke-only", build=build_causal, causal=True, default=False, family="toy",
                            presets={"smoke": {}})


class SlowToy(CausalToy):
    """The causal toy doing its work ``repeats`` times per call: the same function, deliberately slower (a timer
    that cannot tell it from the toy is broken)."""

    repeats = 4

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        outs = [super(SlowToy, self).forward(ids) for _ in range(self.repeats)]
        return sum(outs) / self.repeats


class BloatedToy(CausalToy):
    """The causal toy plus a 32 MiB buffer written during every forward: a step that needs that much more memory
    (a meter that cannot see it is broken)."""

    bloat_bytes = 32 * 1024 * 1024

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        buf = torch.ones(self.bloat_bytes // 4)  # touched pages: resident, then freed after the step
        return super().forward(ids) + buf[:1].sum() * 0.0


def build_slow(cfg: ModelConfig) -> nn.Module:
    return SlowToy(cfg.vocab_size)


def build_bloated(cfg: ModelConfig) -> nn.Module:
    return BloatedToy(cfg.vocab_size)


slow_spec = ModelSpec(name="toy-slow", build=build_slow, causal=True, default=False, family="toy")
bloated_spec = ModelSpec(name="toy-bloated", build=build_bloated, causal=True, default=False, family="toy")
