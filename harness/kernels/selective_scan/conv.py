"""Mamba's causal depthwise conv1d + SiLU, channel-last, as a fused op: ``torch.ops.lmbench.causal_conv1d_silu_fwd``.

Why: HF runs ``conv1d`` on a (batch, D, L) view, then SiLU, then transposes back for ``x_proj``; on CPU the backward
of that chain (SiLU and conv on mismatched memory layouts, plus the copies for the transposes) costs more than the
selective scan. The fused op reads the (batch, L, D) half of ``in_proj``'s output in place and writes a contiguous
(batch, L, D) result. :func:`causal_conv1d_silu` falls back to ``F.conv1d`` + SiLU (same math, autograd) when the
C++ extension cannot be built.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from . import cpu

__all__ = ["causal_conv1d_silu", "causal_conv1d_silu_reference", "conv_flops"]


def causal_conv1d_silu_reference(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """SiLU(causal depthwise conv) with ``F.conv1d``: x (batch, L, D), weight (D, K), bias (D,) -> (batch, L, D)."""
    seq_len, k = x.shape[1], weight.shape[-1]
    y = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), bias, padding=k - 1, groups=x.shape[2])
    return F.silu(y[..., :seq_len]).transpose(1, 2)


def _require_ext():
    ext = cpu.load_extension()
    if ext is None:
        raise RuntimeError(f"lmbench::causal_conv1d_silu: the C++ kernel is unavailable ({cpu.build_error()}); "
                           "call harness.kernels.selective_scan.causal_conv1d_silu, which falls back to F.conv1d")
    return ext


@torch.library.custom_op("lmbench::causal_conv1d_silu_fwd", mutates_args=(), device_types="cpu")
def causal_conv1d_silu_fwd(x: Tensor, weight_t: Tensor, bias: Tensor) -> Tensor:
    """SiLU(bias + sum_k weight_t[k] * x[t - K + 1 + k]) for x (batch, L, D) with unit channel stride."""
    return _require_ext().conv_forward(x, weight_t, bias)


@causal_conv1d_silu_fwd.register_fake
def _fwd_fake(x: Tensor, weight_t: Tensor, bias: Tensor) -> Tensor:
    return x.new_empty(x.shape)


@torch.library.custom_op("lmbench::causal_conv1d_silu_bwd", mutates_args=(), device_types="cpu")
def causal_conv1d_silu_bwd(grad_out: Tensor, x: Tensor, weight_t: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight_t, dbias) of :func:`causal_conv1d_silu_fwd`."""
    dx, dw_tasks, db_tasks = _require_ext().conv_backward(grad_out, x, weight_t, bias)
    return dx, dw_tasks.sum(0), db_tasks.sum(0)  # per-task partial sums of the weight and bias gradients


@causal_conv1d_silu_bwd.register_fake
def _bwd_fake(grad_out: Tensor, x: Tensor, weight_t: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return x.new_empty(x.shape), weight_t.new_empty(weight_t.shape), bias.new_empty(bias.shape)


def _setup_context(ctx, inputs, output) -> None:  # torch.library's signature
    x, weight_t, bias = inputs
    ctx.save_for_backward(x, weight_t, bias)


def _backward(ctx, grad_out: Tensor):
    x, weight_t, bias = ctx.saved_tensors
    return causal_conv1d_silu_bwd(grad_out.contiguous(), x, weight_t, bias)


causal_conv1d_silu_fwd.register_autograd(_backward, setup_context=_setup_context)


def conv_flops(batch: int, seq_len: int, channels: int, taps: int, backward: bool = False) -> int:
    """Real FLOPs of one fused call (a sigmoid = exp, add, division = 3).

    Forward per (batch, token, channel): K multiply-adds and SiLU (sigmoid and a product) = 2K + 4. Backward: the
    recomputed forward, SiLU's derivative (5 more), dx and dweight (2K each) and dbias (1) = 6K + 10.
    """
    per = 6 * taps + 10 if backward else 2 * taps + 4
    return batch * seq_len * channels * per


def _register_flops() -> None:
    from torch.utils.flop_counter import flop_registry

    if torch.ops.lmbench.causal_conv1d_silu_fwd in flop_registry:  # module re-import
        return

    @register_flop_formula(torch.ops.lmbench.causal_conv1d_silu_fwd)
    def _fwd_flops(x_shape, w_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        return conv_flops(x_shape[0], x_shape[1], x_shape[2], w_shape[0])

    @register_flop_formula(torch.ops.lmbench.causal_conv1d_silu_bwd)
    def _bwd_flops(g_shape, x_shape, w_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        return conv_flops(x_shape[0], x_shape[1], x_shape[2], w_shape[0], backward=True)


_register_flops()


def causal_conv1d_silu(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """SiLU(causal depthwise conv1d(x)), channel-last: x (batch, L, D), weight (D, K) or conv1d's (D, 1, K).

    out[t] = silu(bias + sum_k weight[:, k] * x[t - K + 1 + k]) with zeros before t = 0, i.e. HF Mamba's
    ``causal_conv1d_fn(..., activation="silu")`` in (batch, L, D) layout. Gradients flow to x, weight and bias.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, L, D), got {tuple(x.shape)}")
    w = weight.reshape(weight.shape[0], weight.shape[-1])
    if w.shape[0] != x.shape[2]:
        raise ValueError(f"weight must have {x.shape[2]} channels, got {tuple(weight.shape)}")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    b = bias if bias is not None else x.new_zeros(x.shape[2], dtype=dtype)
    if cpu.load_extension() is None:
        out = causal_conv1d_silu_reference(x.to(dtype), w.to(dtype), b.to(dtype))
        return out if out.dtype == x.dtype else out.to(x.dtype)
    xin = x.to(dtype)
    if xin.stride(2) != 1:
        xin = xin.contiguous()
    out = torch.ops.lmbench.causal_conv1d_silu_fwd(xin, w.to(dtype).t().contiguous(), b.to(dtype).contiguous())
    return out if out.dtype == x.dtype else out.to(x.dtype)
