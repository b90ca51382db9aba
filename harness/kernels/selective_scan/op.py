"""The fused selective scan: ``torch.ops.lmbench.selective_scan_fwd`` / ``selective_scan_bwd`` plus :func:`selective_scan`.

Why custom ops (as for BK-Core): autograd, ``torch.compile`` and ``FlopCounterMode`` all see one opaque node, so the
exact chunked backward replaces autograd through L small steps over a materialised (batch, L, D, N) state, compiled
graphs keep the kernel whole, and the FLOP counter sees a documented count instead of nothing.

CPU only: the C++ kernel (csrc/selective_scan.cpp, built lazily by cpu.py). If it cannot be built,
:func:`selective_scan` runs the pure-PyTorch scan of torch_scan.py (mamba.py's pscan, differentiated by autograd)
instead of the ops, after a single warning. Ground truth for both is an independent float64 loop in
tests/test_selective_scan.py.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from . import cpu, torch_scan

__all__ = [
    "CHUNK",
    "cpu_backend",
    "selective_scan",
    "selective_scan_bwd",
    "selective_scan_flops",
    "selective_scan_fwd",
]

CHUNK = 32  # tokens per checkpoint; must equal TC in csrc/selective_scan.cpp (checked on load)


def cpu_backend() -> str:
    """'cpp' when the C++ kernel is loaded (building it on first call), else 'torch' (mamba.py's pscan)."""
    return "cpp" if _ext() is not None else "torch"


def _ext():  # the compiled module or None
    ext = cpu.load_extension()
    if ext is not None and ext.CHUNK != CHUNK:  # pragma: no cover - a source edit out of sync with this file
        raise RuntimeError(f"selective_scan: the C++ kernel's chunk is {ext.CHUNK}, op.py expects {CHUNK}")
    return ext


def _require_ext():
    ext = _ext()
    if ext is None:
        raise RuntimeError(f"lmbench::selective_scan: the C++ kernel is unavailable ({cpu.build_error()}); "
                           "call harness.kernels.selective_scan.selective_scan, which falls back to mamba.py's pscan")
    return ext


def _nchunk(seq_len: int) -> int:
    return max(1, -(-seq_len // CHUNK))


# ---------------------------------------------------------------------------------------------------------------
# Forward op
# ---------------------------------------------------------------------------------------------------------------
@torch.library.custom_op("lmbench::selective_scan_fwd", mutates_args=(), device_types="cpu")
def selective_scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Optional[Tensor],
                       delta_bias: Tensor, delta_softplus: bool) -> tuple[Tensor, Tensor]:
    """(out (batch, L, D), ckpt (batch, ceil(L / CHUNK), N, D)): the scan and its per-chunk start states.

    ckpt is an auxiliary output the backward re-starts from; gradients flowing into it are ignored.
    """
    out, ckpt = _require_ext().forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return out, ckpt


@selective_scan_fwd.register_fake
def _fwd_fake(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Optional[Tensor],
              delta_bias: Tensor, delta_softplus: bool) -> tuple[Tensor, Tensor]:
    b, seq_len, d = u.shape
    return u.new_empty(b, seq_len, d), u.new_empty(b, _nchunk(seq_len), A.shape[1], d)


# ---------------------------------------------------------------------------------------------------------------
# Backward op (exact VJP w.r.t. u, delta, A, B, C, D, z, delta_bias)
# ---------------------------------------------------------------------------------------------------------------
@torch.library.custom_op("lmbench::selective_scan_bwd", mutates_args=(), device_types="cpu")
def selective_scan_bwd(grad_out: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                       z: Optional[Tensor], delta_bias: Tensor, ckpt: Tensor,
                       delta_softplus: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(du, ddelta, dz, dA, dB, dC, dD, ddelta_bias); dz is empty (0,) when z is None."""
    du, ddelta, dz, dA_rows, dB_groups, dC_groups, dD_rows, dbias_rows = _require_ext().backward(
        grad_out, u, delta, A, B, C, D, z, delta_bias, ckpt, delta_softplus)
    # The kernel leaves the cross-thread sums to us (per batch row for A, D, bias; per channel group for B, C).
    return (du, ddelta, dz, dA_rows.sum(0).t().contiguous(), dB_groups.sum(1), dC_groups.sum(1), dD_rows.sum(0),
            dbias_rows.sum(0))


@selective_scan_bwd.register_fake
def _bwd_fake(grad_out: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
              z: Optional[Tensor], delta_bias: Tensor, ckpt: Tensor, delta_softplus: bool):
    dz = u.new_empty(u.shape) if z is not None else u.new_empty(0)
    return (u.new_empty(u.shape), u.new_empty(u.shape), dz, A.new_empty(A.shape), B.new_empty(B.shape),
            B.new_empty(B.shape), D.new_empty(D.shape), D.new_empty(D.shape))


def _setup_context(ctx, inputs, output) -> None:  # torch.library's signature
    u, delta, A, B, C, D, z, delta_bias, delta_softplus = inputs
    _out, ckpt = output
    ctx.has_z = z is not None
    ctx.save_for_backward(u, delta, A, B, C, D, z if z is not None else u.new_empty(0), delta_bias, ckpt)
    ctx.delta_softplus = delta_softplus
    ctx.mark_non_differentiable(ckpt)
    ctx.set_materialize_grads(False)  # never allocate (and zero-fill) a gradient for `ckpt`


def _backward(ctx, grad_out: Tensor | None, _grad_ckpt: Tensor | None):
    if grad_out is None:
        return (None,) * 9
    u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
    du, ddelta, dz, dA, dB, dC, dD, dbias = selective_scan_bwd(
        grad_out.contiguous(), u, delta, A, B, C, D, z if ctx.has_z else None, delta_bias, ckpt, ctx.delta_softplus)
    return du, ddelta, dA, dB, dC, dD, (dz if ctx.has_z else None), dbias, None


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------------------------
# FLOP formulas (counted in docs/mamba-scan.md; exp, log1p and a division count as one FLOP each)
# ---------------------------------------------------------------------------------------------------------------
FLOPS_PER_STATE = (7, 26)  # per (batch, token, channel, state): forward; backward (its forward recompute included)
FLOPS_PER_CHANNEL = (3, 8)  # per (batch, token, channel): bias add, dt u, D u; backward: recompute, dD, du, dbias
FLOPS_SOFTPLUS = (4, 8)  # max, exp, log1p, add; backward: its recompute, the sigmoid derivative (3) and a product
FLOPS_GATE = (5, 16)  # y z sigmoid(z); backward: its recompute, sigmoid again, dz (6) and dy (2)


def selective_scan_flops(batch: int, seq_len: int, channels: int, d_state: int, *, delta_softplus: bool,
                         gated: bool, backward: bool = False) -> int:
    """Real FLOPs of one fused forward (or backward) call, from the per-element counts above."""
    i = 1 if backward else 0
    per_channel = FLOPS_PER_CHANNEL[i] + (FLOPS_SOFTPLUS[i] if delta_softplus else 0) + (FLOPS_GATE[i] if gated else 0)
    return batch * seq_len * channels * (FLOPS_PER_STATE[i] * d_state + per_channel)


def _register_flops() -> None:
    from torch.utils.flop_counter import flop_registry

    if torch.ops.lmbench.selective_scan_fwd in flop_registry:  # module re-import
        return

    @register_flop_formula(torch.ops.lmbench.selective_scan_fwd)
    def _fwd_flops(u_shape, delta_shape, A_shape, B_shape, C_shape, D_shape, z_shape, bias_shape,
                   delta_softplus, *args, out_shape=None, **kwargs) -> int:
        return selective_scan_flops(u_shape[0], u_shape[1], u_shape[2], A_shape[1], delta_softplus=delta_softplus,
                                    gated=z_shape is not None)

    @register_flop_formula(torch.ops.lmbench.selective_scan_bwd)
    def _bwd_flops(g_shape, u_shape, delta_shape, A_shape, B_shape, C_shape, D_shape, z_shape,
                   bias_shape, ckpt_shape, delta_softplus, *args, out_shape=None, **kwargs) -> int:
        return selective_scan_flops(u_shape[0], u_shape[1], u_shape[2], A_shape[1], delta_softplus=delta_softplus,
                                    gated=z_shape is not None, backward=True)


_register_flops()


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------
def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, *,
                   z: Tensor | None = None, delta_bias: Tensor | None = None,
                   delta_softplus: bool = False) -> Tensor:
    """Mamba's selective scan, fused, with the exact backward. Channel-last layout:

    u, delta, z: (batch, L, D); A: (D, N); B, C: (batch, L, N); D, delta_bias: (D,). Returns (batch, L, D):
        dt_t = softplus(delta_t + delta_bias) (without softplus: delta_t + delta_bias)
        h_t = exp(dt_t A) * h_{t-1} + dt_t B_t u_t   (h_{-1} = 0),   y_t = C_t . h_t + D u_t,   out = y * silu(z)
    Gradients flow to every tensor argument. Inputs may be strided views (e.g. halves of one projection). CPU
    tensors; float16/bfloat16 are computed in float32 and cast back. Without the C++ kernel this runs mamba.py's
    pscan (same values and gradients, much slower).
    """
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, L, D), got {tuple(u.shape)}")
    if u.device.type != "cpu":
        raise ValueError("selective_scan is a CPU kernel; on CUDA use mamba_ssm's selective_scan_fn")
    dtype = u.dtype if u.dtype in (torch.float32, torch.float64) else torch.float32
    channels = u.shape[2]
    D = u.new_zeros(channels, dtype=dtype) if D is None else D
    delta_bias = u.new_zeros(channels, dtype=dtype) if delta_bias is None else delta_bias
    args = [t.to(dtype) for t in (u, delta, B, C)]
    if _ext() is None:
        out = torch_scan.selective_scan_torch(args[0], args[1], A.to(dtype), args[2], args[3], D.to(dtype),
                                              None if z is None else z.to(dtype), delta_bias.to(dtype),
                                              bool(delta_softplus))
        return out if out.dtype == u.dtype else out.to(u.dtype)
    out, _ = torch.ops.lmbench.selective_scan_fwd(
        args[0], args[1], A.to(dtype).contiguous(), args[2], args[3], D.to(dtype).contiguous(),
        None if z is None else z.to(dtype), delta_bias.to(dtype).contiguous(), bool(delta_softplus))
    return out if out.dtype == u.dtype else out.to(u.dtype)
