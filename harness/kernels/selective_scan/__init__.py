"""Mamba's selective scan as a fused, differentiable CPU op (C++ forward and exact chunked backward).

``selective_scan`` is the public function (channel-last layout), registered as ``torch.ops.lmbench.selective_scan_fwd``
/ ``selective_scan_bwd``; if the C++ kernel cannot be built it runs mamba.py's parallel scan instead (one warning).
``causal_conv1d_silu`` is Mamba's short depthwise conv + SiLU in the same layout (``lmbench::causal_conv1d_silu_fwd``).
See docs/mamba-scan.md.
"""
from .conv import causal_conv1d_silu, causal_conv1d_silu_reference, conv_flops
from .op import CHUNK, cpu_backend, selective_scan, selective_scan_flops

__all__ = [
           "CHUNK",
           "causal_conv1d_silu",
           "causal_conv1d_silu_reference",
           "conv_flops",
           "cpu_backend",
           "selective_scan",
           "selective_scan_flops",
]
