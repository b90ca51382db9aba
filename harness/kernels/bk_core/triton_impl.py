"""BK-Core for CUDA tensors: Triton chunked parallel scans (also runs on CPU tensors under TRITON_INTERPRET=1).

A GPU needs parallelism inside a row (B is often small next to the SM count), so every recursion is a 3-pass
chunked scan, each pass one kernel launch:
  1. grid (B, chunks): reduce each chunk to one summary with ``tl.associative_scan`` (order-preserving);
  2. grid (B,): scan the chunk summaries of a row (tiles of BLOCK_C chunks) into per-chunk carries;
  3. grid (B, chunks): scan each chunk again and apply its carry to every prefix.
Pivots (d_i = s_i - k_{i-1}/d_{i-1}) are Moebius maps: the summaries are 2x2 complex matrices
[[s_i, -k], [1, 0]] multiplied in order and renormalised by their largest entry at every combine (projective, so
d is unchanged and nothing overflows in fp32, audit §2.3). The backward recursions are affine, x_i = a_i x_{i-1} + b_i,
summarised by (prod a, zero-carry result) like SSM scans. Complex numbers are (re, im) pairs in the input's float
type (fp32 for fp32 inputs).

Contract (shared with torch_scan.py and csrc/bk_core.cpp): forward -> (out (B,N,2), saved (B,N,4) inverse pivots
[1/d, 1/e] or (B,0,4) in causal mode); backward -> dL/dv (B,N). "Scan order" index t maps to token
p = t (left to right) or p = N-1-t (right to left, REV).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .torch_scan import make_kpad

__all__ = ["forward", "backward", "DEFAULT_CHUNK"]

DEFAULT_CHUNK = 256
BLOCK_C = 128


# ---------------------------------------------------------------------------------------------------------------
# Complex helpers on (re, im) pairs
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def _cdiv(ar, ai, br, bi):
    # scaled so |b|^2 cannot under/overflow
    s = tl.maximum(tl.abs(br), tl.abs(bi))
    br = br / s
    bi = bi / s
    den = (br * br + bi * bi) * s
    return (ar * br + ai * bi) / den, (ai * br - ar * bi) / den


@triton.jit
def _mat_combine(a1r, a1i, b1r, b1i, c1r, c1i, d1r, d1i, a2r, a2i, b2r, b2i, c2r, c2i, d2r, d2i):
    # earlier P1 = [[a1, b1], [c1, d1]], later P2: result P2 @ P1, divided by its largest |entry| (projective)
    ar, ai = _cmul(a2r, a2i, a1r, a1i)
    tr, ti = _cmul(b2r, b2i, c1r, c1i)
    ar += tr
    ai += ti
    br, bi = _cmul(a2r, a2i, b1r, b1i)
    tr, ti = _cmul(b2r, b2i, d1r, d1i)
    br += tr
    bi += ti
    cr, ci = _cmul(c2r, c2i, a1r, a1i)
    tr, ti = _cmul(d2r, d2i, c1r, c1i)
    cr += tr
    ci += ti
    dr, di = _cmul(c2r, c2i, b1r, b1i)
    tr, ti = _cmul(d2r, d2i, d1r, d1i)
    dr += tr
    di += ti
    m = tl.maximum(tl.maximum(tl.maximum(tl.abs(ar), tl.abs(ai)), tl.maximum(tl.abs(br), tl.abs(bi))),
                   tl.maximum(tl.maximum(tl.abs(cr), tl.abs(ci)), tl.maximum(tl.abs(dr), tl.abs(di))))
    return ar / m, ai / m, br / m, bi / m, cr / m, ci / m, dr / m, di / m


@triton.jit
def _aff_combine(a1r, a1i, b1r, b1i, a2r, a2i, b2r, b2i):
    # earlier x -> a1 x + b1, later x -> a2 x + b2: composite x -> (a2 a1) x + (a2 b1 + b2)
    ar, ai = _cmul(a2r, a2i, a1r, a1i)
    br, bi = _cmul(a2r, a2i, b1r, b1i)
    return ar, ai, br + b2r, bi + b2i


@triton.jit
def _last(x, offs, n: tl.constexpr):
    return tl.sum(tl.where(offs == n - 1, x, 0.0), axis=0)


# ---------------------------------------------------------------------------------------------------------------
# Pivots: Moebius matrices of one chunk (tokens outside the row become identity matrices)
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _chunk_mats(v_ptr, kpad_ptr, row, chunk, N, c0, zi, CHUNK: tl.constexpr, REV: tl.constexpr):
    offs = tl.arange(0, CHUNK)
    t = chunk * CHUNK + offs
    valid = t < N
    if REV:
        p = N - 1 - t
        kk = tl.load(kpad_ptr + p + 1, mask=valid, other=0.0)
    else:
        p = t
        kk = tl.load(kpad_ptr + p, mask=valid, other=0.0)
    vv = tl.load(v_ptr + row * N + p, mask=valid, other=0.0)
    zero = vv * 0.0
    one = zero + 1.0
    ar = tl.where(valid, vv + c0, one)
    ai = tl.where(valid, zero - zi, zero)
    br = tl.where(valid, -kk, zero)
    cr = tl.where(valid, one, zero)
    dr = tl.where(valid, zero, one)
    return offs, t, p, valid, ar, ai, br, zero, cr, zero, dr, zero


@triton.jit
def _pivot_summary_kernel(v_ptr, kpad_ptr, prod_ptr, N, NC, c0, zi, CHUNK: tl.constexpr, REV: tl.constexpr):
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    offs, t, p, valid, ar, ai, br, bi, cr, ci, dr, di = _chunk_mats(v_ptr, kpad_ptr, row, chunk, N, c0, zi, CHUNK, REV)
    ar, ai, br, bi, cr, ci, dr, di = tl.associative_scan((ar, ai, br, bi, cr, ci, dr, di), 0, _mat_combine)
    base = prod_ptr + (row * NC + chunk) * 8
    tl.store(base + 0, _last(ar, offs, CHUNK))
    tl.store(base + 1, _last(ai, offs, CHUNK))
    tl.store(base + 2, _last(br, offs, CHUNK))
    tl.store(base + 3, _last(bi, offs, CHUNK))
    tl.store(base + 4, _last(cr, offs, CHUNK))
    tl.store(base + 5, _last(ci, offs, CHUNK))
    tl.store(base + 6, _last(dr, offs, CHUNK))
    tl.store(base + 7, _last(di, offs, CHUNK))


@triton.jit
def _pivot_carry_kernel(prod_ptr, carry_ptr, NC, BLOCK: tl.constexpr):
    # carry[row, c] = (num, den) entering chunk c (4 reals); (1, 0) before the first token ("d = infinity")
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    ur = tl.load(prod_ptr + row * NC * 8) * 0.0 + 1.0
    ui = ur * 0.0
    wr = ui
    wi = ui
    tl.store(carry_ptr + row * NC * 4 + 0, ur)
    tl.store(carry_ptr + row * NC * 4 + 1, ui)
    tl.store(carry_ptr + row * NC * 4 + 2, wr)
    tl.store(carry_ptr + row * NC * 4 + 3, wi)
    for c0 in range(0, NC, BLOCK):
        c = c0 + offs
        valid = c < NC
        base = prod_ptr + (row * NC + c) * 8
        ar = tl.load(base + 0, mask=valid, other=1.0)
        ai = tl.load(base + 1, mask=valid, other=0.0)
        br = tl.load(base + 2, mask=valid, other=0.0)
        bi = tl.load(base + 3, mask=valid, other=0.0)
        cr = tl.load(base + 4, mask=valid, other=0.0)
        ci = tl.load(base + 5, mask=valid, other=0.0)
        dr = tl.load(base + 6, mask=valid, other=1.0)
        di = tl.load(base + 7, mask=valid, other=0.0)
        ar, ai, br, bi, cr, ci, dr, di = tl.associative_scan((ar, ai, br, bi, cr, ci, dr, di), 0, _mat_combine)
        # (num, den) leaving chunk c = P_c...P_first (num, den)_tile
        nr, ni = _cmul(ar, ai, ur, ui)
        tr, ti = _cmul(br, bi, wr, wi)
        nr += tr
        ni += ti
        mr, mi = _cmul(cr, ci, ur, ui)
        tr, ti = _cmul(dr, di, wr, wi)
        mr += tr
        mi += ti
        m = tl.maximum(tl.maximum(tl.abs(nr), tl.abs(ni)), tl.maximum(tl.abs(mr), tl.abs(mi)))
        nr = nr / m
        ni = ni / m
        mr = mr / m
        mi = mi / m
        nxt = (c + 1 < NC) & valid
        out = carry_ptr + (row * NC + c + 1) * 4
        tl.store(out + 0, nr, mask=nxt)
        tl.store(out + 1, ni, mask=nxt)
        tl.store(out + 2, mr, mask=nxt)
        tl.store(out + 3, mi, mask=nxt)
        ur = _last(nr, offs, BLOCK)
        ui = _last(ni, offs, BLOCK)
        wr = _last(mr, offs, BLOCK)
        wi = _last(mi, offs, BLOCK)


@triton.jit
def _pivot_apply_kernel(v_ptr, kpad_ptr, carry_ptr, out_ptr, saved_ptr, N, NC, c0, zi, CHUNK: tl.constexpr,
                        KIND: tl.constexpr):
    # KIND 0: causal, out = y = 1/d.  KIND 1: bidirectional forward, saved[..., 0:2] = p = 1/d.
    # KIND 2: bidirectional reverse, saved[..., 2:4] = q = 1/e and out = G = 1/(e - kpad[p] p_{p-1}).
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    offs, t, p, valid, ar, ai, br, bi, cr, ci, dr, di = _chunk_mats(v_ptr, kpad_ptr, row, chunk, N, c0, zi, CHUNK,
                                                                    KIND == 2)
    ar, ai, br, bi, cr, ci, dr, di = tl.associative_scan((ar, ai, br, bi, cr, ci, dr, di), 0, _mat_combine)
    cb = carry_ptr + (row * NC + chunk) * 4
    ur = tl.load(cb + 0)
    ui = tl.load(cb + 1)
    wr = tl.load(cb + 2)
    wi = tl.load(cb + 3)
    nr, ni = _cmul(ar, ai, ur, ui)
    tr, ti = _cmul(br, bi, wr, wi)
    nr += tr
    ni += ti
    mr, mi = _cmul(cr, ci, ur, ui)
    tr, ti = _cmul(dr, di, wr, wi)
    mr += tr
    mi += ti
    yr, yi = _cdiv(mr, mi, nr, ni)  # 1/pivot = den/num
    if KIND == 0:
        tl.store(out_ptr + (row * N + p) * 2, yr, mask=valid)
        tl.store(out_ptr + (row * N + p) * 2 + 1, yi, mask=valid)
    elif KIND == 1:
        tl.store(saved_ptr + (row * N + p) * 4, yr, mask=valid)
        tl.store(saved_ptr + (row * N + p) * 4 + 1, yi, mask=valid)
    else:
        tl.store(saved_ptr + (row * N + p) * 4 + 2, yr, mask=valid)
        tl.store(saved_ptr + (row * N + p) * 4 + 3, yi, mask=valid)
        k0 = tl.load(kpad_ptr + p, mask=valid, other=0.0)
        pm = tl.maximum(p - 1, 0)  # p_{-1} is multiplied by kpad[0] = 0
        pr = tl.load(saved_ptr + (row * N + pm) * 4, mask=valid, other=0.0)
        pi = tl.load(saved_ptr + (row * N + pm) * 4 + 1, mask=valid, other=0.0)
        # G = 1/(num/den - k p) = den / (num - k p den)
        kr, ki = _cmul(k0 * pr, k0 * pi, mr, mi)
        gr, gi = _cdiv(mr, mi, nr - kr, ni - ki)
        tl.store(out_ptr + (row * N + p) * 2, gr, mask=valid)
        tl.store(out_ptr + (row * N + p) * 2 + 1, gi, mask=valid)


# ---------------------------------------------------------------------------------------------------------------
# Backward: affine scans x_t = a_t x_{t-1} + b_t in scan order
# KIND 0 causal (REV):          a = kpad[p+1] y_p^2, b = -y_p^2 w_p;   grad_p = Re x
# KIND 1 Phi, bidirectional:    a = kpad[p+1] p_p^2, b = a w_p;        Phi_p = x  (F_p = Phi_{p-1})
# KIND 2 Psi, bidirectional (REV): a = kpad[p] q_p^2, b = a w_p;       Psi_p = x  (B_p = Psi_{p+1})
# with w = conj(g), g = dL/dRe + i dL/dIm.
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _chunk_affine(g_ptr, y_ptr, saved_ptr, kpad_ptr, row, chunk, N, CHUNK: tl.constexpr, KIND: tl.constexpr):
    offs = tl.arange(0, CHUNK)
    t = chunk * CHUNK + offs
    valid = t < N
    if KIND == 1:
        p = t
    else:
        p = N - 1 - t
    gr = tl.load(g_ptr + (row * N + p) * 2, mask=valid, other=0.0)
    wi = -tl.load(g_ptr + (row * N + p) * 2 + 1, mask=valid, other=0.0)
    wr = gr
    if KIND == 0:
        qr = tl.load(y_ptr + (row * N + p) * 2, mask=valid, other=0.0)
        qi = tl.load(y_ptr + (row * N + p) * 2 + 1, mask=valid, other=0.0)
        kk = tl.load(kpad_ptr + p + 1, mask=valid, other=0.0)
    elif KIND == 1:
        qr = tl.load(saved_ptr + (row * N + p) * 4, mask=valid, other=0.0)
        qi = tl.load(saved_ptr + (row * N + p) * 4 + 1, mask=valid, other=0.0)
        kk = tl.load(kpad_ptr + p + 1, mask=valid, other=0.0)
    else:
        qr = tl.load(saved_ptr + (row * N + p) * 4 + 2, mask=valid, other=0.0)
        qi = tl.load(saved_ptr + (row * N + p) * 4 + 3, mask=valid, other=0.0)
        kk = tl.load(kpad_ptr + p, mask=valid, other=0.0)
    q2r = qr * qr - qi * qi
    q2i = 2.0 * qr * qi
    ar = kk * q2r
    ai = kk * q2i
    if KIND == 0:
        br, bi = _cmul(q2r, q2i, wr, wi)
        br = -br
        bi = -bi
    else:
        br, bi = _cmul(ar, ai, wr, wi)
    one = wr * 0.0 + 1.0
    ar = tl.where(valid, ar, one)  # identity beyond the row
    ai = tl.where(valid, ai, 0.0)
    br = tl.where(valid, br, 0.0)
    bi = tl.where(valid, bi, 0.0)
    return offs, p, valid, ar, ai, br, bi


@triton.jit
def _affine_summary_kernel(g_ptr, y_ptr, saved_ptr, kpad_ptr, summ_ptr, N, NC, CHUNK: tl.constexpr,
                           KIND: tl.constexpr):
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    offs, p, valid, ar, ai, br, bi = _chunk_affine(g_ptr, y_ptr, saved_ptr, kpad_ptr, row, chunk, N, CHUNK, KIND)
    ar, ai, br, bi = tl.associative_scan((ar, ai, br, bi), 0, _aff_combine)
    base = summ_ptr + (row * NC + chunk) * 4
    tl.store(base + 0, _last(ar, offs, CHUNK))
    tl.store(base + 1, _last(ai, offs, CHUNK))
    tl.store(base + 2, _last(br, offs, CHUNK))
    tl.store(base + 3, _last(bi, offs, CHUNK))


@triton.jit
def _affine_carry_kernel(summ_ptr, carry_ptr, NC, BLOCK: tl.constexpr):
    # carry[row, c] = x entering chunk c (2 reals); 0 before the first token
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    xr = tl.load(summ_ptr + row * NC * 4) * 0.0
    xi = xr
    tl.store(carry_ptr + row * NC * 2, xr)
    tl.store(carry_ptr + row * NC * 2 + 1, xi)
    for c0 in range(0, NC, BLOCK):
        c = c0 + offs
        valid = c < NC
        base = summ_ptr + (row * NC + c) * 4
        ar = tl.load(base + 0, mask=valid, other=1.0)
        ai = tl.load(base + 1, mask=valid, other=0.0)
        br = tl.load(base + 2, mask=valid, other=0.0)
        bi = tl.load(base + 3, mask=valid, other=0.0)
        ar, ai, br, bi = tl.associative_scan((ar, ai, br, bi), 0, _aff_combine)
        nr, ni = _cmul(ar, ai, xr, xi)
        nr += br
        ni += bi
        nxt = (c + 1 < NC) & valid
        tl.store(carry_ptr + (row * NC + c + 1) * 2, nr, mask=nxt)
        tl.store(carry_ptr + (row * NC + c + 1) * 2 + 1, ni, mask=nxt)
        xr = _last(nr, offs, BLOCK)
        xi = _last(ni, offs, BLOCK)


@triton.jit
def _affine_apply_kernel(g_ptr, y_ptr, saved_ptr, kpad_ptr, carry_ptr, dst_ptr, N, NC, CHUNK: tl.constexpr,
                         KIND: tl.constexpr):
    # KIND 0: dst = grad (B, N) = Re x.  KIND 1/2: dst (B, N, 2) = x (Phi or Psi).
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    offs, p, valid, ar, ai, br, bi = _chunk_affine(g_ptr, y_ptr, saved_ptr, kpad_ptr, row, chunk, N, CHUNK, KIND)
    ar, ai, br, bi = tl.associative_scan((ar, ai, br, bi), 0, _aff_combine)
    cr = tl.load(carry_ptr + (row * NC + chunk) * 2)
    ci = tl.load(carry_ptr + (row * NC + chunk) * 2 + 1)
    xr, xi = _cmul(ar, ai, cr, ci)
    xr += br
    xi += bi
    if KIND == 0:
        tl.store(dst_ptr + row * N + p, xr, mask=valid)
    else:
        tl.store(dst_ptr + (row * N + p) * 2, xr, mask=valid)
        tl.store(dst_ptr + (row * N + p) * 2 + 1, xi, mask=valid)


@triton.jit
def _bidir_grad_kernel(g_ptr, G_ptr, phi_ptr, psi_ptr, grad_ptr, N, BLOCK: tl.constexpr):
    # grad_p = -Re(G_p^2 (w_p + Phi_{p-1} + Psi_{p+1})), Phi_{-1} = Psi_N = 0
    row = tl.program_id(0)
    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = p < N
    wr = tl.load(g_ptr + (row * N + p) * 2, mask=valid, other=0.0)
    wi = -tl.load(g_ptr + (row * N + p) * 2 + 1, mask=valid, other=0.0)
    has_f = valid & (p > 0)
    fr = tl.load(phi_ptr + (row * N + p - 1) * 2, mask=has_f, other=0.0)
    fi = tl.load(phi_ptr + (row * N + p - 1) * 2 + 1, mask=has_f, other=0.0)
    has_b = valid & (p + 1 < N)
    br = tl.load(psi_ptr + (row * N + p + 1) * 2, mask=has_b, other=0.0)
    bi = tl.load(psi_ptr + (row * N + p + 1) * 2 + 1, mask=has_b, other=0.0)
    Gr = tl.load(G_ptr + (row * N + p) * 2, mask=valid, other=0.0)
    Gi = tl.load(G_ptr + (row * N + p) * 2 + 1, mask=valid, other=0.0)
    g2r = Gr * Gr - Gi * Gi
    g2i = 2.0 * Gr * Gi
    sr = wr + fr + br
    si = wi + fi + bi
    tl.store(grad_ptr + row * N + p, -(g2r * sr - g2i * si), mask=valid)


# ---------------------------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------------------------
def _check_chunk(chunk: int) -> int:
    if chunk < 2 or chunk & (chunk - 1):
        raise ValueError(f"chunk must be a power of two >= 2, got {chunk}")
    return chunk


def _pivots(v: torch.Tensor, kpad: torch.Tensor, out: torch.Tensor, saved: torch.Tensor, c0: float, zi: float,
            kind: int, chunk: int, block_c: int) -> None:
    b, n = v.shape
    nc = triton.cdiv(n, chunk)
    rev = kind == 2
    prod = torch.empty(b, nc, 8, dtype=v.dtype, device=v.device)
    carry = torch.empty(b, nc, 4, dtype=v.dtype, device=v.device)
    _pivot_summary_kernel[(b, nc)](v, kpad, prod, n, nc, c0, zi, CHUNK=chunk, REV=rev)
    _pivot_carry_kernel[(b,)](prod, carry, nc, BLOCK=block_c)
    _pivot_apply_kernel[(b, nc)](v, kpad, carry, out, saved, n, nc, c0, zi, CHUNK=chunk, KIND=kind)


def _affine(grad_out: torch.Tensor, out: torch.Tensor, saved: torch.Tensor, kpad: torch.Tensor, dst: torch.Tensor,
            kind: int, chunk: int, block_c: int) -> None:
    b, n = out.shape[0], out.shape[1]
    nc = triton.cdiv(n, chunk)
    summ = torch.empty(b, nc, 4, dtype=out.dtype, device=out.device)
    carry = torch.empty(b, nc, 2, dtype=out.dtype, device=out.device)
    _affine_summary_kernel[(b, nc)](grad_out, out, saved, kpad, summ, n, nc, CHUNK=chunk, KIND=kind)
    _affine_carry_kernel[(b,)](summ, carry, nc, BLOCK=block_c)
    _affine_apply_kernel[(b, nc)](grad_out, out, saved, kpad, carry, dst, n, nc, CHUNK=chunk, KIND=kind)


def forward(v: torch.Tensor, k: torch.Tensor, z_re: float, z_im: float, h0: float, causal: bool,
            chunk: int = DEFAULT_CHUNK, block_c: int = BLOCK_C) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B,N,2), saved) for v (B,N) float32/float64 (CUDA, or CPU under TRITON_INTERPRET=1).

    chunk: tokens per chunk (power of two); block_c: chunk summaries per tile of the carry pass (power of two).
    """
    _check_chunk(chunk)
    _check_chunk(block_c)
    v = v.contiguous()
    b, n = v.shape
    out = torch.empty(b, n, 2, dtype=v.dtype, device=v.device)
    saved = torch.empty(b, 0 if causal else n, 4, dtype=v.dtype, device=v.device)
    if b == 0 or n == 0:
        return out, saved
    kpad = make_kpad(k, n, v.dtype, v.device)
    c0 = float(h0 - z_re)
    if causal:
        _pivots(v, kpad, out, out, c0, float(z_im), 0, chunk, block_c)  # saved_ptr unused for KIND 0
    else:
        _pivots(v, kpad, out, saved, c0, float(z_im), 1, chunk, block_c)
        _pivots(v, kpad, out, saved, c0, float(z_im), 2, chunk, block_c)
    return out, saved


def backward(grad_out: torch.Tensor, out: torch.Tensor, saved: torch.Tensor, k: torch.Tensor, causal: bool,
             chunk: int = DEFAULT_CHUNK, block_c: int = BLOCK_C) -> torch.Tensor:
    """Exact dL/dv (B,N) from dL/d[Re, Im] (B,N,2) and the forward's (out, saved)."""
    _check_chunk(chunk)
    _check_chunk(block_c)
    grad_out = grad_out.to(out.dtype).contiguous()
    out = out.contiguous()
    saved = saved.contiguous()
    b, n = out.shape[0], out.shape[1]
    grad = torch.empty(b, n, dtype=out.dtype, device=out.device)
    if b == 0 or n == 0:
        return grad
    kpad = make_kpad(k, n, out.dtype, out.device)
    if causal:
        _affine(grad_out, out, out, kpad, grad, 0, chunk, block_c)  # saved_ptr unused for KIND 0
        return grad
    phi = torch.empty(b, n, 2, dtype=out.dtype, device=out.device)
    psi = torch.empty_like(phi)
    _affine(grad_out, out, saved, kpad, phi, 1, chunk, block_c)
    _affine(grad_out, out, saved, kpad, psi, 2, chunk, block_c)
    block = 1024
    _bidir_grad_kernel[(b, triton.cdiv(n, block))](grad_out, out, phi, psi, grad, n, BLOCK=block)
    return grad
