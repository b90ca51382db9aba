"""BDH ("Baby Dragon Hatchling", Kosowski et al. 2025, arXiv 2509.26507): one shared layer of positive sparse
neurons with linear (softmax-free) attention, applied n_layer times.

Written from the paper's equations and checked against the shapes of Pathway's MIT-licensed reference
(github.com/pathwaycom/bdh); no code is copied. With D = n_embd, H = n_head, N = mult·D/H neurons per head and
LN a LayerNorm without parameters, one layer is::

    xs  = relu(x · E)                   E  : (H, D, N)    sparse positive neuron activations, per head
    q   = RoPE(xs)                      θ = 2^16 over the N neuron dimensions (query = key: "the same neurons")
    a   = tril(q · qᵀ, -1)              strictly lower triangle, no softmax: a token never attends to itself
    yKV = LN(a · x)                     linear attention reads the (head-shared) residual stream x
    ys  = relu(yKV · Ev)                Ev : (H, D, N)
    xy  = dropout(xs ⊙ ys)              Hebbian-style gating: a neuron fires only if both sides fire
    y   = LN(concat_h(xy) · Dx)         Dx : (H·N, D)
    x   = LN(x + y)

starting from x = LN(embed(ids)) and ending with logits = x · lm_head. E, Ev and Dx are the *same* tensors in
every layer, so the parameter count is 3·H·D·N + 2·V·D = 3·mult·D² + 2·V·D (untied embedding and head) whatever
n_layer is: the reference size (D=256, H=4, mult=128, V=256) has 25,296,896. Compute is not shared: each layer
costs 3·mult·D² multiply-adds per token plus the T×N attention, so at equal parameter count BDH spends n_layer
times the FLOPs of an unshared network.

Differences from the reference, deliberate: the head is an ``nn.Linear`` named ``lm_head`` (so ``count_parameters``
counts it as embedding, like every other family's head), the unused ``lm_gate`` parameter of some reference
revisions is absent, and the model returns logits only (no loss, no generation state).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.models import MODELS
from harness.models.base import ModelConfig, ModelSpec

__all__ = ["BDH", "BDHConfig", "build_bdh", "bdh_parameter_count", "rope_angles", "PRESETS"]

ROPE_THETA = 2.0**16
INIT_STD = 0.02


@dataclass(frozen=True)
class BDHConfig:
    """Defaults are the reference configuration (25.3M parameters at V = 256)."""

    vocab_size: int = 256
    n_layer: int = 6
    n_embd: int = 256  # D
    n_head: int = 4  # H
    mult: int = 128  # neurons per layer = mult·D, i.e. N = mult·D/H per head
    dropout: float = 0.1

    @property
    def n_neurons(self) -> int:
        """N, neurons per head."""
        return self.mult * self.n_embd // self.n_head

    def __post_init__(self) -> None:
        if (self.mult * self.n_embd) % self.n_head:
            raise ValueError(f"mult·D = {self.mult * self.n_embd} must be divisible by n_head = {self.n_head}")
        if self.n_neurons % 2:
            raise ValueError(f"RoPE rotates pairs of neurons: N = mult·D/H = {self.n_neurons} must be even")


def bdh_parameter_count(cfg: BDHConfig) -> dict[str, int]:
    """The closed form: E, Ev, Dx are mult·D² each; embedding and head V·D each."""
    non_embedding = 3 * cfg.mult * cfg.n_embd**2
    return {"total": non_embedding + 2 * cfg.vocab_size * cfg.n_embd, "non_embedding": non_embedding}


def rope_angles(seq_len: int, n: int, theta: float = ROPE_THETA, device=None) -> torch.Tensor:
    """(T, N) rotation angles: neurons 2j and 2j+1 form a pair rotating at t·θ^(-2j/N).

    Computed in turns and reduced mod 1 before scaling by 2π (as the reference does), so float32 stays accurate
    for long sequences: t·f can be large but its fractional part is all cos/sin need.
    """
    pair = torch.arange(n, device=device, dtype=torch.float64).div(2, rounding_mode="floor") * 2  # 0,0,2,2,...
    turns_per_step = theta ** (-pair / n) / (2 * math.pi)
    t = torch.arange(seq_len, device=device, dtype=torch.float64)
    return (torch.outer(t, turns_per_step) % 1.0) * (2 * math.pi)


def apply_rope(v: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each neuron pair (v[2j], v[2j+1]) by its angle: (a, b) -> (a·cos − b·sin, b·cos + a·sin)."""
    cos, sin = angles.cos().to(v.dtype), angles.sin().to(v.dtype)
    rotated = torch.stack((-v[..., 1::2], v[..., 0::2]), dim=-1).flatten(-2)  # (a, b) -> (-b, a)
    return v * cos + rotated * sin


class BDH(nn.Module):
    """ids (B, T) -> logits (B, T, V). Parameters: encoder E, encoder_v Ev, decoder Dx (shared by all layers)."""

    def __init__(self, cfg: BDHConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D, H, N = cfg.n_embd, cfg.n_head, cfg.n_neurons
        self.embed = nn.Embedding(cfg.vocab_size, D)
        self.encoder = nn.Parameter(torch.empty(H, D, N))  # E
        self.encoder_v = nn.Parameter(torch.empty(H, D, N))  # Ev
        self.decoder = nn.Parameter(torch.empty(H * N, D))  # Dx
        self.lm_head = nn.Linear(D, cfg.vocab_size, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        for p in (self.embed.weight, self.encoder, self.encoder_v, self.decoder, self.lm_head.weight):
            nn.init.normal_(p, std=INIT_STD)

    @staticmethod
    def ln(x: torch.Tensor) -> torch.Tensor:
        """LayerNorm without weight or bias: BDH's only normalisation, used after every update."""
        return F.layer_norm(x, x.shape[-1:])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        H, N = self.cfg.n_head, self.cfg.n_neurons
        angles = rope_angles(T, N, device=ids.device)  # (T, N)
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril(-1)  # strictly lower: s < t

        x = self.ln(self.embed(ids)).unsqueeze(1)  # (B, 1, T, D): one residual stream, broadcast over heads
        for _ in range(self.cfg.n_layer):
            xs = F.relu(x @ self.encoder)  # (B, H, T, N)
            q = apply_rope(xs, angles)
            a = (q @ q.transpose(-1, -2)).masked_fill(~causal, 0.0)  # (B, H, T, T), no softmax
            y_kv = self.ln(a @ x)  # (B, H, T, D)
            ys = F.relu(y_kv @ self.encoder_v)  # (B, H, T, N)
            xy = self.drop(xs * ys)
            y = self.ln(xy.transpose(1, 2).reshape(B, 1, T, H * N) @ self.decoder)  # (B, 1, T, D)
            x = self.ln(x + y)
        return self.lm_head(x.squeeze(1))


def build_bdh(cfg: ModelConfig) -> nn.Module:
    p = cfg.preset
    return BDH(BDHConfig(vocab_size=cfg.vocab_size, n_layer=p["n_layer"], n_embd=p["d_model"], n_head=p["n_head"],
                         mult=p["mult"], dropout=p.get("dropout", 0.0)))


# Non-embedding parameters are 3·mult·D², matched to the GPT-2 family at each budget (12·d²·n_layer there):
# smoke 3·8·64² = 98,304; small 3·16·128² = 786,432; full 3·24·384² = 10,616,832. n_layer follows the
# transformer's depth (the weights are shared, so it changes compute, not size). Dropout 0 like every family.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"d_model": 64, "n_head": 4, "mult": 8, "n_layer": 2},
    "small": {"d_model": 128, "n_head": 4, "mult": 16, "n_layer": 4},
    "full": {"d_model": 384, "n_head": 4, "mult": 24, "n_layer": 6},
}

MODELS.add(
    "bdh",
    ModelSpec(
        name="bdh",
        family="bdh",
        build=build_bdh,
        default=False,  # opt-in until a calibration run sets its targets (flip to True then)
        presets={k: dict(v) for k, v in PRESETS.items()},
        notes="BDH (Pathway, arXiv 2509.26507), own implementation: one shared layer applied n_layer times, "
              "relu neurons, RoPE linear attention on the strict lower triangle, untied head, dropout 0",
    ),
)
