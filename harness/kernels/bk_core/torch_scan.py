"""Pure-PyTorch BK-Core kernels with the fused op's contract (forward -> (out, saved); exact VJP), chunked scans.

This is the same algorithm as the C++ and Triton kernels, written with torch ops vectorised over (rows x chunks):
  1. per chunk, the renormalised product of the 2x2 Moebius matrices M_i = [[s_i, -k], [1, 0]] (pivots) or the
     (product of multipliers, zero-carry result) pair (the backward's affine scans);
  2. a serial carry over the chunks of each row;
  3. every chunk re-runs its recursion from the right carry.
A Python loop of ~2*chunk + N/chunk steps replaces the reference's N steps, so it is the fallback kernel when the
C++ extension cannot be built (and when Triton is missing on CUDA), and the executable spec that
``tests/test_bk_core.py`` compares the chunked path against the sequential one with.

Conventions (shared with csrc/bk_core.cpp): kpad has N + 1 entries, kpad[0] = kpad[N] = 0, kpad[i] = k_{i-1}; the
forward step i reads kpad[i], the reverse step i reads kpad[i + 1]. The state of a pivot scan is the inverse pivot
(y = 1/d or q = 1/e). saved is (B, N, 4) = [Re p, Im p, Re q, Im q] in bidirectional mode and (B, 0, 4) in causal
mode (the causal backward only needs out = 1/d).
"""
from __future__ import annotations

import math

import torch

__all__ = ["make_kpad", "pivot_scan", "affine_scan", "forward", "backward", "default_chunk"]

_RENORM = 8  # renormalise Moebius products every few steps; exact because the maps are projective


def make_kpad(k: torch.Tensor, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """kpad (N + 1,) with zero ends, from k of 1 element (uniform coupling) or N - 1 elements."""
    kpad = torch.zeros(n + 1, dtype=dtype, device=device)
    if n > 1:
        kk = k.to(dtype=dtype, device=device).reshape(-1)
        kpad[1:n] = kk if kk.numel() == n - 1 else kk.expand(n - 1)
    return kpad


def default_chunk(n: int) -> int:
    """~sqrt(N) balances the in-chunk loop (2 * chunk steps) against the carry loop (N / chunk steps)."""
    return max(1, int(math.isqrt(max(n, 1))))


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _chunks(x: torch.Tensor, chunk: int, fill: complex | float) -> torch.Tensor:
    """(B, N) -> (B, nc, chunk), padded at the end with `fill` (an identity step for the scan at hand)."""
    b, n = x.shape
    nc = -(-n // chunk)
    pad = nc * chunk - n
    if pad:
        x = torch.cat([x, x.new_full((b, pad), fill)], dim=1)
    return x.reshape(b, nc, chunk)


def pivot_scan(s: torch.Tensor, kstep: torch.Tensor, *, reverse: bool = False,
               chunk: int | None = None) -> torch.Tensor:
    """Inverse pivots y_i = 1/d_i with d_i = s_i - kstep_i * y_{i-1}, y_{-1} = 0 (reverse=True runs right to left).

    s: (B, N) complex; kstep: (N,) real, the coupling used at step i (kpad[i] forward, kpad[i+1] reverse).
    chunk=None or >= N runs the plain sequential loop; otherwise the 3-pass chunked scan.
    """
    if reverse:
        return pivot_scan(s.flip(-1), kstep.flip(-1), chunk=chunk).flip(-1)
    b, n = s.shape
    ks = kstep.to(s.real.dtype).expand(b, n)
    if chunk is None or chunk >= n:
        y = torch.zeros(b, dtype=s.dtype, device=s.device)
        ys = []
        for i in range(n):
            y = 1.0 / (s[:, i] - ks[:, i] * y)
            ys.append(y)
        return torch.stack(ys, dim=1)
    # Padding steps are M = [[1, 0], [0, 1]]-like: s = 1, k = 0 gives d = 1, y = 1; they only follow the real
    # tokens of the last chunk, so they never feed back into a real token.
    sc = _chunks(s, chunk, 1.0)
    kc = _chunks(ks, chunk, 0.0)
    nc = sc.shape[1]
    one = torch.ones_like(sc[:, :, 0])
    zero = torch.zeros_like(one)
    # pass 1: rows (a, bb) and (c, dd) of P = M_last ... M_first, renormalised
    a, bb, c, dd = one, zero, zero, one
    for t in range(chunk):
        st, kt = sc[:, :, t], kc[:, :, t]
        a, bb, c, dd = st * a - kt * c, st * bb - kt * dd, a, bb
        if (t + 1) % _RENORM == 0 or t + 1 == chunk:
            m = torch.stack([a.abs(), bb.abs(), c.abs(), dd.abs()]).amax(0)
            a, bb, c, dd = a / m, bb / m, c / m, dd / m
    # pass 2: projective carry (num, den) = (1, 0) before the first token; y entering chunk j is den / num
    num = torch.ones(b, dtype=s.dtype, device=s.device)
    den = torch.zeros_like(num)
    y_in = []
    for j in range(nc):
        y_in.append(den / num)
        num, den = a[:, j] * num + bb[:, j] * den, c[:, j] * num + dd[:, j] * den
        m = torch.maximum(num.abs(), den.abs())
        num, den = num / m, den / m
    y = torch.stack(y_in, dim=1)
    # pass 3: rerun the recursion inside every chunk from its carry
    ys = []
    for t in range(chunk):
        y = 1.0 / (sc[:, :, t] - kc[:, :, t] * y)
        ys.append(y)
    return torch.stack(ys, dim=2).reshape(b, nc * chunk)[:, :n]


def affine_scan(alpha: torch.Tensor, beta: torch.Tensor, *, reverse: bool = False,
                chunk: int | None = None) -> torch.Tensor:
    """x_i = alpha_i * x_{i-1} + beta_i with x_{-1} = 0 (reverse=True: x_i = alpha_i x_{i+1} + beta_i), (B, N)."""
    if reverse:
        return affine_scan(alpha.flip(-1), beta.flip(-1), chunk=chunk).flip(-1)
    b, n = alpha.shape
    if chunk is None or chunk >= n:
        x = torch.zeros(b, dtype=alpha.dtype, device=alpha.device)
        xs = []
        for i in range(n):
            x = alpha[:, i] * x + beta[:, i]
            xs.append(x)
        return torch.stack(xs, dim=1)
    ac = _chunks(alpha, chunk, 1.0)
    bc = _chunks(beta, chunk, 0.0)
    nc = ac.shape[1]
    prod = torch.ones_like(ac[:, :, 0])
    loc = torch.zeros_like(prod)
    for t in range(chunk):  # pass 1: (prod alpha, zero-carry result) per chunk
        prod = ac[:, :, t] * prod
        loc = ac[:, :, t] * loc + bc[:, :, t]
    x = torch.zeros(b, dtype=alpha.dtype, device=alpha.device)
    x_in = []
    for j in range(nc):  # pass 2: carries
        x_in.append(x)
        x = prod[:, j] * x + loc[:, j]
    x = torch.stack(x_in, dim=1)
    xs = []
    for t in range(chunk):  # pass 3
        x = ac[:, :, t] * x + bc[:, :, t]
        xs.append(x)
    return torch.stack(xs, dim=2).reshape(b, nc * chunk)[:, :n]


def _as_real(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(x.contiguous())


def forward(v: torch.Tensor, k: torch.Tensor, z_re: float, z_im: float, h0: float, causal: bool,
            chunk: int | None = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, N, 2), saved) in v's dtype. chunk=-1 picks ~sqrt(N); None runs sequentially."""
    bsz, n = v.shape
    if chunk == -1:
        chunk = default_chunk(n)
    cdt = _complex(v.dtype)
    kpad = make_kpad(k, n, v.dtype, v.device)
    s = torch.complex(v + (h0 - z_re), torch.full_like(v, -z_im)).to(cdt)
    p = pivot_scan(s, kpad[:n], chunk=chunk)
    if causal:
        return _as_real(p).to(v.dtype), v.new_empty(bsz, 0, 4)
    q = pivot_scan(s, kpad[1:], reverse=True, chunk=chunk)
    p_prev = torch.cat([torch.zeros_like(p[:, :1]), p[:, :-1]], dim=1)
    e = 1.0 / q
    g = 1.0 / (e - kpad[:n] * p_prev)  # d + e - s = e - k_{i-1} p_{i-1}
    saved = torch.cat([_as_real(p), _as_real(q)], dim=-1).to(v.dtype)
    return _as_real(g).to(v.dtype), saved


def backward(grad_out: torch.Tensor, out: torch.Tensor, saved: torch.Tensor, k: torch.Tensor, causal: bool,
             chunk: int | None = -1) -> torch.Tensor:
    """Exact VJP dL/dv (B, N) from dL/d[Re, Im] (audit §2.5 and §2.6)."""
    bsz, n, _ = out.shape
    if chunk == -1:
        chunk = default_chunk(n)
    cdt = _complex(out.dtype)
    kpad = make_kpad(k, n, out.dtype, out.device)
    g = torch.view_as_complex(grad_out.to(out.dtype).contiguous()).to(cdt)
    w = g.conj()
    big_g = torch.view_as_complex(out.contiguous()).to(cdt)
    if causal:
        y2 = big_g * big_g  # out = y = 1/d
        a = affine_scan(kpad[1:] * y2, -y2 * w, reverse=True, chunk=chunk)  # A_i = y_i^2 (k_i A_{i+1} - w_i)
        return a.real.to(out.dtype)
    p = torch.view_as_complex(saved[..., 0:2].contiguous()).to(cdt)
    q = torch.view_as_complex(saved[..., 2:4].contiguous()).to(cdt)
    # F_i = Phi_{i-1}, Phi_i = k_i p_i^2 (Phi_{i-1} + w_i);  B_i = Psi_{i+1}, Psi_i = k_{i-1} q_i^2 (Psi_{i+1} + w_i)
    alpha_f = kpad[1:] * p * p
    phi = affine_scan(alpha_f, alpha_f * w, chunk=chunk)
    alpha_b = kpad[:n] * q * q
    psi = affine_scan(alpha_b, alpha_b * w, reverse=True, chunk=chunk)
    f = torch.cat([torch.zeros_like(phi[:, :1]), phi[:, :-1]], dim=1)
    bb = torch.cat([psi[:, 1:], torch.zeros_like(psi[:, :1])], dim=1)
    return (-(big_g * big_g * (w + f + bb)).real).to(out.dtype)
