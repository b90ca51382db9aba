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


# ---- long-context and synthetic-task toys (faults injected on purpose) ------------------------------------------

NAN_STEP = 5  # the training step (0-based) whose loss NanAtStep makes NaN


class NanAtStep(CausalToy):
    """Causal toy whose logits become NaN in its (NAN_STEP + 1)-th training forward: an injected divergence."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__(vocab_size)
        self.train_calls = 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = super().forward(ids)
        if self.training and torch.is_grad_enabled():
            self.train_calls += 1
            if self.train_calls == NAN_STEP + 1:
                out = out * float("nan")
        return out


OOM_FROM = 128  # NeedsMemory raises out-of-memory on inputs this long or longer


class NeedsMemory(CausalToy):
    """Causal toy that raises CUDA's out-of-memory error on inputs of OOM_FROM tokens or more (a stand-in for a
    model whose memory grows with length)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] >= OOM_FROM:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {ids.shape[1] ** 2} bytes (toy)")
        return super().forward(ids)


class Sleepy(CausalToy):
    """Causal toy that sleeps 0.2 s in every training forward (for --cell-timeout)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.training:
            import time

            time.sleep(0.2)
        return super().forward(ids)


class Unigram(nn.Module):
    """Ignores context: logits depend on nothing but a learned bias (a unigram model)."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, 8)  # unused by the logits; keeps the model shape ordinary
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*ids.shape, -1) + 0.0 * self.emb(ids).sum(-1, keepdim=True)


class RecallOracle(nn.Module):
    """Not learned: predicts the token that followed the first earlier occurrence of the current token (solves MQAR
    and induction heads exactly), plus a trainable bias so the optimizer has something to do. Checks the task
    scoring end to end: it must score 100%."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        same = ids.unsqueeze(2) == ids.unsqueeze(1)  # (b, t, s): token at s equals token at t
        earlier = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril(-1)
        hit = same & earlier & (torch.arange(t, device=ids.device) < t - 1)  # s must have a follower
        first = torch.where(hit.any(-1), hit.float().argmax(-1), torch.zeros_like(ids))
        follow = ids.gather(1, (first + 1).clamp(max=t - 1))
        onehot = nn.functional.one_hot(follow, self.vocab_size).float() * 20.0
        return onehot * hit.any(-1, keepdim=True) + self.bias


class QuadraticToy(CausalToy):
    """Causal toy that keeps an L×L matrix per sequence for backward (like attention without a fused kernel)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool, device=ids.device).tril()
        scores = (h @ h.transpose(1, 2)).masked_fill(~causal, float("-inf")).softmax(-1)  # (B, L, L), saved
        return self.head(h + scores @ h)


class Blocks(nn.Module):
    """Embedding, a ModuleList of residual MLP blocks (mixing by a causal conv), head: for checkpointing tests."""

    def __init__(self, vocab_size: int, d: int = 32, n: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab_size, d)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)) for _ in range(n))
        self.head = nn.Linear(d, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        for block in self.blocks:
            h = h + block(torch.cumsum(h, dim=1) / torch.arange(1, ids.shape[1] + 1, device=ids.device)[:, None])
        return self.head(h)


nan_spec = ModelSpec(name="toy-nan", build=lambda cfg: NanAtStep(cfg.vocab_size), causal=True, default=False,
                     family="toy")
nan_claimed_spec = ModelSpec(name="toy-nan-claimed", build=lambda cfg: NanAtStep(cfg.vocab_size), causal=True,
                             default=False, family="toy", long_context=True)
oom_spec = ModelSpec(name="toy-oom", build=lambda cfg: NeedsMemory(cfg.vocab_size), causal=True, default=False,
                     family="toy")
sleepy_spec = ModelSpec(name="toy-sleepy", build=lambda cfg: Sleepy(cfg.vocab_size), causal=True, default=False,
                        family="toy")
unigram_spec = ModelSpec(name="toy-unigram", build=lambda cfg: Unigram(cfg.vocab_size), causal=True, default=False,
                         family="toy")
oracle_spec = ModelSpec(name="toy-oracle", build=lambda cfg: RecallOracle(cfg.vocab_size), causal=True,
                        default=False, family="toy")
quadratic_spec = ModelSpec(name="toy-quadratic", build=lambda cfg: QuadraticToy(cfg.vocab_size), causal=True,
                           default=False, family="toy")
claimed_spec = ModelSpec(name="toy-claimed", build=build_causal, causal=True, default=False, family="toy",
                         long_context=True)
