"""The device's peak FLOP/s, for model FLOPs utilisation (MFU).

Where the peak comes from:
- a known NVIDIA GPU: its datasheet's *dense* peak for the precision the matmuls run in (fp32 on CUDA cores unless
  ``torch.backends.cuda.matmul`` allows TF32; bf16/fp16 tensor cores for half-precision models);
- anything else (every CPU, an unknown GPU): measured, as the best of several large matmuls in that dtype on this
  process's threads. A measured peak is what this machine reaches, not a theoretical bound, and records say so.

Achieved FLOP/s above the peak (MFU > 1) is not a fast model but a bug (an unsynchronised CUDA timer, a FLOP count
that double-counts, a wrong table row): measurements put every MFU in their metrics as ``*_mfu`` and the one
refusal of impossible numbers, ``harness.results.finalize.impossible``, gives such a result the status
``impossible`` with a one-line reason instead of comparing it with anything.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

# Dense (no structured sparsity) peaks in TFLOP/s from NVIDIA's datasheets. Keys: a substring of
# torch.cuda.get_device_name(), tried in order (more specific names first). "tf32" is the tensor-core TF32 peak,
# "fp32" the CUDA-core peak; "bf16"/"fp16" tensor cores with fp32 accumulation.
GPU_PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    ("H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    ("H100", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),  # SXM5 (e.g. "H100 80GB HBM3")
    ("H200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),  # SXM
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),  # SXM4 and PCIe
    ("L40S", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05}),
    ("L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    ("A10", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0}),  # A10 (A10G is within a few %)
    ("RTX 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}),
    ("V100", {"fp32": 15.7, "fp16": 125.0}),
    ("T4", {"fp32": 8.1, "fp16": 65.0}),
)


@dataclass(frozen=True)
class Peak:
    flops_per_s: float
    precision: str  # "fp32" | "tf32" | "bf16" | "fp16" | "fp64"
    source: str  # one line: the table row or how it was measured

    def to_dict(self) -> dict[str, Any]:
        return {"peak_flops_per_s": self.flops_per_s, "precision": self.precision, "source": self.source}


def matmul_precision(dtype: torch.dtype, device: torch.device) -> str:
    """The precision a matmul of ``dtype`` runs in on ``device`` under the current torch settings."""
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float16:
        return "fp16"
    if dtype == torch.float64:
        return "fp64"
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "fp32"


def table_peak(device_name: str, precision: str) -> Peak | None:
    """The datasheet peak of a known GPU for ``precision``; None for an unknown GPU or precision."""
    for key, peaks in GPU_PEAK_TFLOPS:
        if key in device_name:
            if precision not in peaks:
                return None
            return Peak(peaks[precision] * 1e12, precision,
                        f"datasheet: {key} dense {precision} peak {peaks[precision]:g} TFLOP/s ({device_name})")
    return None


class MatmulProbe:
    """One n×n by n×n matmul in ``dtype`` on ``device`` (2n³ FLOPs), as a callable to time.

    Why a probe and not only a number measured once: on a shared machine a peak measured during a burst of load is
    too low, and a model timed later on idle cores could then exceed it (MFU > 1 from the load alone). Timed in the
    same interleaved rounds as the model (``throughput.measure`` does), the same bursts hit both; the peak is the
    best round seen."""

    def __init__(self, device: torch.device | str, dtype: torch.dtype = torch.float32, n: int = 1024) -> None:
        self.device, self.dtype, self.n = torch.device(device), dtype, n
        g = torch.Generator().manual_seed(0)
        self.a = torch.randn(n, n, generator=g).to(device=self.device, dtype=dtype)
        self.b = torch.randn(n, n, generator=g).to(device=self.device, dtype=dtype)
        self.flops = 2.0 * n ** 3

    def __call__(self) -> torch.Tensor:
        return torch.mm(self.a, self.b)

    def peak(self, times: list[float], threads: int, how: str = "") -> Peak:
        """The best of ``times`` (seconds per matmul) as a measured peak."""
        precision = matmul_precision(self.dtype, self.device)
        return Peak(self.flops / min(times), precision,
                    f"measured: best of {len(times)} rounds of {self.n}x{self.n} {precision} matmuls on "
                    f"{self.device} ({threads} threads){how}")


@functools.lru_cache(maxsize=None)
def measured_peak(device: str, dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 5,
                  threads: int | None = None) -> Peak:
    """The best FLOP/s of ``repeats`` n×n matmuls in ``dtype`` (2n³ FLOPs each), cached per process and setting."""
    from harness.measure.timing import time_side_by_side

    probe = MatmulProbe(device, dtype, n)
    timing = time_side_by_side({"matmul": probe}, rounds=repeats, warmup=2, min_block_s=0.05,
                               threads=threads)["matmul"]
    return probe.peak(timing.times, timing.threads)


def best_peak(peaks: list[Peak]) -> Peak:
    """The highest of several peaks for the same device and precision (a peak is a bound: the best one is kept)."""
    return max(peaks, key=lambda p: p.flops_per_s)


def device_peak(device: torch.device, dtype: torch.dtype = torch.float32) -> Peak:
    """The peak FLOP/s to compute MFU against on ``device`` for a model whose weights are ``dtype``: the datasheet's
    for a known GPU, else measured (``Peak.source`` starts with "measured")."""
    precision = matmul_precision(dtype, device)
    if device.type == "cuda":
        peak = table_peak(torch.cuda.get_device_name(device), precision)
        if peak is not None:
            return peak
    return measured_peak(str(device), dtype, threads=torch.get_num_threads())
