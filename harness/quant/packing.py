"""Bit-packing of integer codes into bytes: the model size we report is the length of these byte arrays.

Why real packing rather than ``n * bits / 8``: the size is the claim a quantization benchmark makes, so it is
measured on the artifact itself (and a test unpacks it back exactly). Codes are stored as unsigned offsets
u = code - qmin in [0, 2^bits - 1], written least-significant bit first into one little-endian bit stream
(``numpy.packbits(..., bitorder="little")``), so 3-bit codes straddle byte boundaries and n codes take exactly
ceil(n * bits / 8) bytes.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.quant.rtn import qrange


def pack_codes(codes: torch.Tensor, bits: int) -> np.ndarray:
    """Flatten signed ``bits``-wide codes and pack them into a uint8 array of ceil(n * bits / 8) bytes."""
    qmin, qmax = qrange(bits)
    c = codes.detach().reshape(-1).to(torch.int64).cpu().numpy()
    if c.size and (c.min() < qmin or c.max() > qmax):
        raise ValueError(f"codes out of the {bits}-bit range [{qmin}, {qmax}]")
    u = (c - qmin).astype(np.uint8)
    bit_planes = (u[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # (n, bits), LSB first
    return np.packbits(bit_planes.reshape(-1), bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> torch.Tensor:
    """Inverse of pack_codes: the first ``count`` signed codes as a flat int8 tensor."""
    qmin, _ = qrange(bits)
    bit_planes = np.unpackbits(np.asarray(packed, dtype=np.uint8), count=count * bits, bitorder="little")
    weights = (1 << np.arange(bits, dtype=np.int64))
    u = bit_planes.reshape(count, bits).astype(np.int64) @ weights
    return torch.from_numpy((u + qmin).astype(np.int8))
