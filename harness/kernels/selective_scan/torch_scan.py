"""Pure-PyTorch selective scan: the fallback when the C++ kernel cannot be built.

It is what Mamba ran before the fused kernel existed: the discretised (batch, L, D, N) tensors materialised and
mamba.py's parallel scan (``mambapy.pscan``) over them, or a sequential loop when mamba.py is not installed.
Gradients come from autograd through it, so the fallback is exact too, just slow.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["selective_scan_torch"]


def _pscan():
    try:
        from mambapy.pscan import pscan
    except ImportError:
        return None
    return pscan


def selective_scan_torch(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Optional[Tensor],
                         delta_bias: Tensor, delta_softplus: bool) -> Tensor:
    """Same contract as ``lmbench::selective_scan_fwd``'s ``out`` (channel-last), differentiable by autograd."""
    dt = delta + delta_bias
    if delta_softplus:
        dt = F.softplus(dt)
    dA = torch.exp(dt.unsqueeze(-1) * A)  # (batch, L, D, N)
    dBu = (dt * u).unsqueeze(-1) * B.unsqueeze(2)  # (batch, L, D, N)
    pscan = _pscan()
    if pscan is not None:
        hs = pscan(dA, dBu)  # mamba.py scans dim 1 (time) of (batch, L, D, N)
    else:
        h = torch.zeros_like(dBu[:, 0])
        states = []
        for t in range(u.shape[1]):
            h = dA[:, t] * h + dBu[:, t]
            states.append(h)
        hs = torch.stack(states, dim=1)
    y = (hs @ C.unsqueeze(-1)).squeeze(-1) + u * D
    return y * F.silu(z) if z is not None else y
