"""The fused BK-Core op: ``torch.ops.lmbench.bk_core_fwd`` / ``bk_core_bwd`` plus the public :func:`bk_core`.

Why custom ops: they are opaque to autograd, ``torch.compile`` and ``FlopCounterMode`` alike, so the exact O(N)
backward (itself a fused op) replaces autograd through N tiny steps, compiled graphs keep the kernel as one node, and
the FLOP counter sees a documented per-token count instead of nothing.

Dispatch: CPU tensors run the C++ kernel (csrc/bk_core.cpp, built lazily by cpu.py), CUDA tensors the Triton
chunked scan (triton_impl.py). If either cannot be used, the op falls back to the pure-PyTorch chunked kernels
(torch_scan.py) after a single warning. The float64 loop in reference.py is the ground truth for all of them.
"""
from __future__ import annotations

import warnings
from typing import Literal, Union

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from . import cpu, torch_scan

Mode = Literal["causal", "bidirectional"]
Coupling = Union[float, Tensor]

__all__ = ["bk_core", "bk_core_fwd", "bk_core_bwd", "FLOPS_PER_TOKEN", "bk_core_flops", "cpu_backend"]

# Real FLOPs per token (counted in docs/bk-core.md): forward, backward.
FLOPS_PER_TOKEN: dict[str, tuple[int, int]] = {"causal": (11, 15), "bidirectional": (32, 40)}

MIN_CHUNK_CPU = 512  # C++ kernel: when B is small, rows are cut into chunks of at least this many tokens

_warned: set[str] = set()


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)


def _check_mode(mode: str) -> bool:
    if mode not in ("causal", "bidirectional"):
        raise ValueError(f"mode must be 'causal' or 'bidirectional', got {mode!r}")
    return mode == "causal"


def cpu_backend() -> str:
    """'cpp' when the C++ kernel is loaded (building it on first call), else 'torch' (the fallback)."""
    return "cpp" if cpu.load_extension() is not None else "torch"


# ---------------------------------------------------------------------------------------------------------------
# Forward op
# ---------------------------------------------------------------------------------------------------------------
@torch.library.custom_op("lmbench::bk_core_fwd", mutates_args=(), device_types="cpu")
def bk_core_fwd(v: Tensor, k: Tensor, z_re: float, z_im: float, h0: float, mode: str) -> tuple[Tensor, Tensor]:
    """(out (B, N, 2), saved) for v (B, N) and k = coupling**2 with 1 or N - 1 entries.

    saved holds the inverse pivots [1/d, 1/e] as (B, N, 4) in bidirectional mode and is (B, 0, 4) in causal mode,
    whose backward needs only out = 1/d. saved is an auxiliary output: gradients flowing into it are ignored.
    """
    causal = _check_mode(mode)
    ext = cpu.load_extension()
    if ext is not None:
        out, saved = ext.forward(v, k, z_re, z_im, h0, causal, MIN_CHUNK_CPU)
        return out, saved
    return torch_scan.forward(v, k, z_re, z_im, h0, causal)


@bk_core_fwd.register_kernel("cuda")
def _bk_core_fwd_cuda(v: Tensor, k: Tensor, z_re: float, z_im: float, h0: float, mode: str) -> tuple[Tensor, Tensor]:
    causal = _check_mode(mode)
    tri = _triton()
    if tri is not None:
        return tri.forward(v, k, z_re, z_im, h0, causal)
    return torch_scan.forward(v, k, z_re, z_im, h0, causal)


@bk_core_fwd.register_fake
def _bk_core_fwd_fake(v: Tensor, k: Tensor, z_re: float, z_im: float, h0: float, mode: str) -> tuple[Tensor, Tensor]:
    causal = _check_mode(mode)
    b, n = v.shape
    return v.new_empty(b, n, 2), v.new_empty(b, 0 if causal else n, 4)


# ---------------------------------------------------------------------------------------------------------------
# Backward op (exact VJP w.r.t. v)
# ---------------------------------------------------------------------------------------------------------------
@torch.library.custom_op("lmbench::bk_core_bwd", mutates_args=(), device_types="cpu")
def bk_core_bwd(grad_out: Tensor, out: Tensor, saved: Tensor, k: Tensor, mode: str) -> Tensor:
    """dL/dv (B, N) from dL/d[Re, Im] (B, N, 2), using the forward's out and saved (audit §2.5, §2.6)."""
    causal = _check_mode(mode)
    ext = cpu.load_extension()
    if ext is not None:
        return ext.backward(grad_out, out, saved, k, causal, MIN_CHUNK_CPU)
    return torch_scan.backward(grad_out, out, saved, k, causal)


@bk_core_bwd.register_kernel("cuda")
def _bk_core_bwd_cuda(grad_out: Tensor, out: Tensor, saved: Tensor, k: Tensor, mode: str) -> Tensor:
    causal = _check_mode(mode)
    tri = _triton()
    if tri is not None:
        return tri.backward(grad_out, out, saved, k, causal)
    return torch_scan.backward(grad_out, out, saved, k, causal)


@bk_core_bwd.register_fake
def _bk_core_bwd_fake(grad_out: Tensor, out: Tensor, saved: Tensor, k: Tensor, mode: str) -> Tensor:
    _check_mode(mode)
    return out.new_empty(out.shape[0], out.shape[1])


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 - torch.library signature
    _v, k, _z_re, _z_im, _h0, mode = inputs
    out, saved = output
    ctx.save_for_backward(out, saved, k)
    ctx.mode = mode
    ctx.mark_non_differentiable(saved)
    ctx.set_materialize_grads(False)  # never allocate (and zero-fill) a gradient for `saved`


def _backward(ctx, grad_out: Tensor | None, _grad_saved: Tensor | None):  # noqa: ANN001, ANN202
    if grad_out is None:
        return None, None, None, None, None, None
    out, saved, k = ctx.saved_tensors
    grad_v = bk_core_bwd(grad_out.contiguous(), out, saved, k, ctx.mode)
    return grad_v, None, None, None, None, None


bk_core_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------------------------
# FLOP formulas (see docs/bk-core.md for the per-token counts)
# ---------------------------------------------------------------------------------------------------------------
def bk_core_flops(batch: int, seq_len: int, mode: str, backward: bool = False) -> int:
    """Real FLOPs of one fused forward (or backward) call: FLOPS_PER_TOKEN[mode] * B * N."""
    _check_mode(mode)
    return FLOPS_PER_TOKEN[mode][1 if backward else 0] * batch * seq_len


def _register_flops() -> None:
    from torch.utils.flop_counter import flop_registry

    if torch.ops.lmbench.bk_core_fwd in flop_registry:  # module re-import
        return

    @register_flop_formula(torch.ops.lmbench.bk_core_fwd)
    def _fwd_flops(v_shape, k_shape, z_re, z_im, h0, mode, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
        return bk_core_flops(v_shape[0], v_shape[1], mode)

    @register_flop_formula(torch.ops.lmbench.bk_core_bwd)
    def _bwd_flops(g_shape, out_shape_, saved_shape, k_shape, mode, *args,  # noqa: ANN001
                   out_shape=None, **kwargs) -> int:
        return bk_core_flops(g_shape[0], g_shape[1], mode, backward=True)


_register_flops()


# ---------------------------------------------------------------------------------------------------------------
# Triton (CUDA) loader
# ---------------------------------------------------------------------------------------------------------------
_triton_state: dict[str, object] = {"done": False, "module": None}


def _triton():  # noqa: ANN202
    if not _triton_state["done"]:
        try:
            from . import triton_impl

            _triton_state["module"] = triton_impl
        except Exception as exc:  # noqa: BLE001 - no triton (or a broken install) means "use the fallback"
            _warn_once("triton", f"bk_core: Triton is unavailable ({type(exc).__name__}: {exc}); CUDA tensors use "
                                 "the pure-PyTorch chunked kernels instead.")
        _triton_state["done"] = True
    return _triton_state["module"]


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------
def _coupling_k(coupling: Coupling, n: int, like: Tensor) -> Tensor:
    if isinstance(coupling, Tensor):
        if coupling.requires_grad and torch.is_grad_enabled():
            _warn_once("coupling_grad", "bk_core: no gradient flows to a tensor `coupling` (only to v); "
                                        "it is treated as a constant.")
        c = coupling.detach().to(device=like.device, dtype=like.dtype)
        if c.numel() == 1:
            return (c * c).reshape(1)
        if c.shape != (max(n - 1, 0),):
            raise ValueError(f"coupling tensor must be a scalar or have shape ({n - 1},), got {tuple(c.shape)}")
        return (c * c).contiguous()
    return torch.full((1,), float(coupling) ** 2, dtype=like.dtype, device=like.device)


def bk_core(v: Tensor, *, z: complex = 1j, h0: float = -2.0, coupling: Coupling = 1.0,
            mode: Mode = "causal") -> Tensor:
    """BK-Core features ``[Re, Im]`` (B, N, 2) of the resolvent diagonal, fused, with the exact backward.

    v: (B, N) (or (N,), giving (N, 2)) potentials, float32 or float64 (float16/bfloat16 are computed in float32:
    there is no half-precision complex type). The diagonal is ``h0 + v``, off-diagonals ``coupling`` (scalar or
    (N-1,) tensor, no gradient), shift ``z`` with Im z > 0 (no gradient), so every output has modulus <= 1/Im z.
    mode="causal": y_i = 1/d_i depends on v_0..v_i only (use this for next-token LMs);
    mode="bidirectional": G_ii of the full H, which sees future tokens (faithful to ResNet-BK, leaks targets).
    """
    _check_mode(mode)
    zc = complex(z)
    if zc.imag <= 0:
        raise ValueError(f"Im z must be > 0 (it bounds |output| by 1/Im z), got z={z}")
    if v.dim() not in (1, 2):
        raise ValueError(f"v must have shape (B, N) or (N,), got {tuple(v.shape)}")
    if not v.is_floating_point():
        raise TypeError(f"v must be a floating-point tensor, got {v.dtype}")
    squeeze = v.dim() == 1
    x = v.unsqueeze(0) if squeeze else v
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    k = _coupling_k(coupling, work.shape[1], work)
    out, _ = torch.ops.lmbench.bk_core_fwd(work.contiguous(), k, zc.real, zc.imag, float(h0), mode)
    if out.dtype != v.dtype:
        out = out.to(v.dtype)
    return out[0] if squeeze else out
