"""Ground-truth BK-Core in pure PyTorch: a Python loop over N in complex128, differentiable by autograd.

BK-Core returns the diagonal of the resolvent (H - zI)^-1 of a tridiagonal Hamiltonian H with diagonal
``h0 + v`` and off-diagonals ``coupling``. It uses the Riccati (LU-pivot) form, which cannot overflow
(|pivot| >= Im z), rather than the determinant form that overflows at N ~ 110 in fp32. It is slow (O(N)
tiny ops) and exists only as the reference that the fused kernels are tested against.
"""
from __future__ import annotations

from typing import Literal, Union

import torch

Mode = Literal["causal", "bidirectional"]
Coupling = Union[float, torch.Tensor]

__all__ = ["bk_core_reference", "dense_resolvent_diag", "build_hamiltonian", "coupling_product"]


def coupling_product(coupling: Coupling, n: int, *, dtype: torch.dtype = torch.float64,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """k_i = b_i * c_i = coupling_i**2 as a real tensor of shape (n-1,); b = c is symmetric, so k >= 0."""
    if isinstance(coupling, torch.Tensor):
        c = coupling.to(dtype=dtype, device=device)
        if c.dim() == 0:
            c = c.expand(max(n - 1, 0))
        if c.shape != (max(n - 1, 0),):
            raise ValueError(f"coupling tensor must have shape ({n - 1},), got {tuple(c.shape)}")
        return c * c
    return torch.full((max(n - 1, 0),), float(coupling) ** 2, dtype=dtype, device=device)


def _check(v: torch.Tensor, z: complex, mode: str) -> None:
    if mode not in ("causal", "bidirectional"):
        raise ValueError(f"mode must be 'causal' or 'bidirectional', got {mode!r}")
    if complex(z).imag <= 0:
        raise ValueError(f"Im z must be > 0 (it bounds |G| by 1/Im z), got z={z}")
    if v.dim() not in (1, 2):
        raise ValueError(f"v must have shape (B, N) or (N,), got {tuple(v.shape)}")


def bk_core_reference(v: torch.Tensor, *, z: complex = 1j, h0: float = -2.0, coupling: Coupling = 1.0,
                      mode: Mode = "causal") -> torch.Tensor:
    """BK-Core features ``[Re, Im]`` of shape (B, N, 2) ((N, 2) for 1-D v), computed in float64.

    causal:        y_i  = 1/d_i, the last diagonal entry of (H_{0..i} - z)^-1 (depends on v_0..v_i only).
    bidirectional: G_ii = 1/(d_i + e_i - s_i), the diagonal of (H - z)^-1 (depends on every v_j: leaks the future).
    Gradients w.r.t. v (and a tensor coupling) come from autograd through the loop; the result is cast back to
    v's dtype.
    """
    _check(v, z, mode)
    squeeze = v.dim() == 1
    x = v.unsqueeze(0) if squeeze else v
    n = x.shape[-1]
    zc = complex(z)
    k = coupling_product(coupling, n, device=x.device).to(torch.complex128)
    s = (x.to(torch.float64) + float(h0)).to(torch.complex128) - zc  # (B, N)
    d = [s[:, 0]]
    for i in range(1, n):
        d.append(s[:, i] - k[i - 1] / d[-1])
    if mode == "causal":
        out = 1.0 / torch.stack(d, dim=1)
    else:
        e = [s[:, n - 1]]
        for i in range(n - 2, -1, -1):
            e.append(s[:, i] - k[i] / e[-1])
        e_t = torch.stack(e[::-1], dim=1)
        out = 1.0 / (torch.stack(d, dim=1) + e_t - s)
    res = torch.stack([out.real, out.imag], dim=-1).to(v.dtype)
    return res[0] if squeeze else res


def build_hamiltonian(v: torch.Tensor, *, h0: float = -2.0, coupling: Coupling = 1.0) -> torch.Tensor:
    """Dense (B, N, N) float64 tridiagonal H = diag(h0 + v) + off-diagonals (for small-N tests only)."""
    x = v.unsqueeze(0) if v.dim() == 1 else v
    n = x.shape[-1]
    if isinstance(coupling, torch.Tensor):
        c = coupling.to(torch.float64).expand(n - 1) if coupling.dim() == 0 else coupling.to(torch.float64)
    else:
        c = torch.full((n - 1,), float(coupling), dtype=torch.float64)
    c = c.to(x.device)
    h = torch.diag_embed(x.to(torch.float64) + float(h0))
    off = torch.diag_embed(c, offset=1) + torch.diag_embed(c, offset=-1)
    return h + off


def dense_resolvent_diag(v: torch.Tensor, *, z: complex = 1j, h0: float = -2.0, coupling: Coupling = 1.0,
                         mode: Mode = "bidirectional") -> torch.Tensor:
    """The same features from a dense ``torch.linalg.inv(H - zI)``: an independent O(N^3) check for N <= 64.

    causal mode inverts every leading block H_{0..i} and takes its last diagonal entry.
    """
    _check(v, z, mode)
    squeeze = v.dim() == 1
    h = build_hamiltonian(v, h0=h0, coupling=coupling).to(torch.complex128)
    n = h.shape[-1]
    eye = torch.eye(n, dtype=torch.complex128, device=h.device)
    zc = complex(z)
    if mode == "bidirectional":
        out = torch.diagonal(torch.linalg.inv(h - zc * eye), dim1=-2, dim2=-1)
    else:
        cols = [torch.linalg.inv(h[:, : i + 1, : i + 1] - zc * eye[: i + 1, : i + 1])[:, i, i] for i in range(n)]
        out = torch.stack(cols, dim=1)
    res = torch.stack([out.real, out.imag], dim=-1)
    return res[0] if squeeze else res
