"""Round-to-nearest (RTN) integer quantization of weight matrices: the math, nothing about models.

A matrix is quantized row by row: a row is one output channel (``nn.Linear.weight`` orientation, (out, in)), and a
row is split into groups of ``group_size`` consecutive input weights that share one scale (and, asymmetric only,
one integer zero point). Per-output-channel quantization is the special case group_size = in.

Two mappings, both written to reproduce torchao's ``choose_qparams_affine`` / ``quantize_affine`` bit for bit
(same operation order: ``round(w * (1 / scale)) + zero_point``, round half to even, then clamp), so that our path
and torchao's give identical codes where both run (tested in tests/test_quant.py):

- ``symmetric=True`` is torchao's ``SYMMETRIC_NO_CLIPPING_ERR``: zero point 0,
  scale = max(min(w, 0) / qmin, max(w, 0) / qmax). No value is clipped, so the error is at most half a step,
  and the range is the full signed range [-2^(b-1), 2^(b-1) - 1].
- ``symmetric=False`` is torchao's ``ASYMMETRIC``: scale = (max(w, 0) - min(w, 0)) / (qmax - qmin) and an integer
  zero point, so every level covers the group's actual range and 0 stays exactly representable.

Why not torchao's default ``SYMMETRIC`` (scale = amax / ((qmax - qmin) / 2)): it is not idempotent. The most
negative value lands on qmin = -(qmax + 1), so the dequantized group has a larger amax than the original and a
second pass picks a different scale. Measured on a 512x256 N(0, 1) matrix (torchao 0.18, groups of 32): 1494 int4
and 13241 int2 codes change on re-quantization with ``SYMMETRIC``, none with the two mappings above.
Re-quantizing our dequantized weights gives the same codes and zero points; values agree to float rounding of the
recomputed scale (a few ulp), because fl(fl(n * s) / n) != s for some s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# torchao's default eps in choose_qparams_affine for float32 input: scales are clamped to at least this, so a
# scale is never zero (an all-zero group gets codes that dequantize to exactly 0).
EPS = torch.finfo(torch.float32).smallest_normal


def qrange(bits: int) -> tuple[int, int]:
    """Signed integer range of a ``bits``-wide code: (-2^(bits-1), 2^(bits-1) - 1)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class QuantizedMatrix:
    """Integer codes of a (rows, cols) matrix plus what is needed to dequantize it.

    codes: int8 (rows, cols), each in qrange(bits). scales: float32 (rows, n_groups).
    zero_points: int8 (rows, n_groups) in qrange(bits) for the asymmetric mapping, None for symmetric.
    The last group of a row is shorter when cols is not a multiple of group_size (a ragged group).
    """

    codes: torch.Tensor
    scales: torch.Tensor
    zero_points: torch.Tensor | None
    bits: int
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)  # type: ignore[return-value]

    def dequantize(self) -> torch.Tensor:
        """float32 (rows, cols): (code - zero_point) * scale, in torchao's operation order."""
        rows, cols = self.codes.shape
        g = self.group_size
        n_groups = self.scales.shape[1]
        q = F.pad(self.codes.to(torch.float32), (0, n_groups * g - cols)).view(rows, n_groups, g)
        if self.zero_points is not None:
            q = q - self.zero_points.to(torch.float32).unsqueeze(-1)
        return (q * self.scales.unsqueeze(-1)).view(rows, n_groups * g)[:, :cols]


def quantize(w: torch.Tensor, bits: int, group_size: int | None = None, *, symmetric: bool) -> QuantizedMatrix:
    """RTN-quantize a 2-D matrix (rows = output channels). group_size None means one group per row.

    The effective group size is min(group_size, cols); a ragged last group is padded with zeros for the
    statistics, which changes nothing because both mappings already include 0 in the range.
    """
    if w.dim() != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("cannot quantize a matrix with non-finite values")
    qmin, qmax = qrange(bits)
    rows, cols = w.shape
    g = cols if group_size is None else min(int(group_size), cols)
    if g < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    n_groups = math.ceil(cols / g)
    x = F.pad(w.detach().to(torch.float32), (0, n_groups * g - cols)).view(rows, n_groups, g)
    min_neg = x.amin(-1).clamp(max=0.0)
    max_pos = x.amax(-1).clamp(min=0.0)
    if symmetric:
        smin, smax = min_neg / float(qmin), max_pos / float(qmax)
        scale = torch.where(smin > smax, smin, smax).clamp(min=EPS)
        zp = None
        shifted = torch.round(x * (1.0 / scale.unsqueeze(-1)))
    else:
        scale = ((max_pos - min_neg) / float(qmax - qmin)).clamp(min=EPS)
        zp = (qmin - torch.round(min_neg / scale)).clamp(qmin, qmax)
        shifted = torch.round(x * (1.0 / scale.unsqueeze(-1))) + zp.unsqueeze(-1)
    codes = shifted.clamp(qmin, qmax).view(rows, n_groups * g)[:, :cols].to(torch.int8)
    return QuantizedMatrix(
        codes=codes.contiguous(),
        scales=scale,
        zero_points=None if zp is None else zp.to(torch.int8),
        bits=bits,
        group_size=g,
    )


def fake_quantize(w: torch.Tensor, bits: int, group_size: int | None = None, *, symmetric: bool) -> torch.Tensor:
    """quantize then dequantize, in w's dtype: the weights a weight-only RTN model computes with."""
    return quantize(w, bits, group_size, symmetric=symmetric).dequantize().to(w.dtype)


def fake_quantize_activations(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Dynamic per-token asymmetric quantize-dequantize of activations (last dim = one token's features).

    Same as torchao's ``int8_asym_per_token`` activation quantization in ``Int8DynamicActivationIntxWeightConfig``,
    so our path and torchao's see the same activations.
    """
    if x.numel() == 0:
        return x
    flat = x.reshape(-1, x.shape[-1])
    return quantize(flat, bits, None, symmetric=False).dequantize().to(x.dtype).reshape(x.shape)
