"""Run HF's ``MambaMixer`` on CPU through the fused selective-scan op, keeping the module (and state dict) as is.

Only *our* builder applies this (``build_mamba``): each mixer instance's class is swapped for
:class:`FusedScanMambaMixer`, a subclass that adds no parameters or buffers, so parameter counts, names and
``state_dict`` keys are unchanged and a checkpoint loads into either version. transformers itself is never patched.

The subclass's forward computes exactly what ``MambaMixer.forward`` does on its no-cache path, but channel-last
throughout: ``in_proj`` output (batch, L, 2D) is split into x and the gate z without transposes, the depthwise causal
conv and SiLU on x are one fused op, ``x_proj``/``dt_proj`` act on (batch, L, D) rows, and the scan (softplus of
dt + bias, the recurrence, the D skip and the SiLU(z) gate) is another. Anything else (a generation cache, CUDA tensors, a
padding mask in a compiled graph...) defers to the original forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.kernels.selective_scan import causal_conv1d_silu, selective_scan
from harness.kernels.selective_scan.op import cpu_backend

__all__ = ["FusedScanMambaMixer", "fused_scan_available", "install_fused_scan"]


def fused_scan_available() -> bool:
    """True when the C++ selective-scan kernel is loaded (builds it on the first call per machine)."""
    return cpu_backend() == "cpp"


def _mixer_class() -> type:
    from transformers.models.mamba.modeling_mamba import MambaMixer

    return MambaMixer


class FusedScanMambaMixer(_mixer_class()):  # type: ignore[misc]
    """``MambaMixer`` whose full-sequence, cache-free CPU forward uses ``lmbench::selective_scan_fwd``."""

    def forward(self, hidden_states: Tensor, cache_params=None, attention_mask=None, **kwargs):
        if cache_params is not None or hidden_states.device.type != "cpu":
            return super().forward(hidden_states, cache_params=cache_params, attention_mask=attention_mask, **kwargs)
        dtype = hidden_states.dtype
        if attention_mask is not None:
            hidden_states = (hidden_states * attention_mask[:, :, None]).to(dtype)
        xz = self.in_proj(hidden_states)  # (batch, L, 2D)
        x, z = xz.chunk(2, dim=-1)
        x = causal_conv1d_silu(x, self.conv1d.weight, self.conv1d.bias)  # (batch, L, D), contiguous
        if attention_mask is not None:
            x = (x * attention_mask[:, :, None]).to(dtype)
        dt, B, C = torch.split(self.x_proj(x), [self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # bias and softplus are fused into the scan
        A = -torch.exp(self.A_log.to(dtype))
        y = selective_scan(x, dt, A, B, C, self.D.to(dtype), z=z, delta_bias=self.dt_proj.bias.to(dtype),
                           delta_softplus=True)
        return self.out_proj(y)


def install_fused_scan(model: nn.Module) -> int:
    """Swap every ``MambaMixer`` in ``model`` to :class:`FusedScanMambaMixer` in place; returns how many.

    Call only when :func:`fused_scan_available` is True (the fused op would otherwise run its slow fallback).
    """
    base = _mixer_class()
    count = 0
    for module in model.modules():
        if type(module) is base:
            module.__class__ = FusedScanMambaMixer
            count += 1
    return count
