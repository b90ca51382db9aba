"""BK-Core kernel benchmarks: the fused op against its reference, its O(N) scaling, and (on CUDA) its bandwidth.

Targets live in ``fixtures/targets/kernels.toml`` (section ``[bk_core]``); the protocol and measured numbers are in
docs/bk-core.md. Timings are wall-clock medians of a few repeats of forward + backward (autograd through the op,
upstream gradient precomputed, ``v.grad`` cleared between repeats); variants and sizes are interleaved round-robin so
that load from other processes hits every one alike. Speed is judged only as ratios measured side by side: against
the Python-loop reference *and* against the pure-PyTorch chunked fallback, so a silent fallback cannot pass.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import pytest
import torch

from harness.kernels.bk_core import bk_core, bk_core_reference, cpu_backend, torch_scan
from harness.measure.result import Result

MODES = ["causal", "bidirectional"]


def _fwd_bwd(fn: Callable[..., torch.Tensor], x: torch.Tensor, grad: torch.Tensor, mode: str) -> None:
    x.grad = None
    fn(x, mode=mode).backward(grad)


def _time_once(fn: Callable[..., torch.Tensor], x: torch.Tensor, grad: torch.Tensor, mode: str) -> float:
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _fwd_bwd(fn, x, grad, mode)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _inputs(b: int, n: int, dtype: torch.dtype, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(b * 7919 + n)
    v = (torch.rand(b, n, generator=g, dtype=torch.float64) * 6 - 3).to(dtype=dtype, device=device)
    grad = torch.randn(b, n, 2, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    return v.requires_grad_(True), grad


def _torch_fallback(v: torch.Tensor, *, mode: str) -> torch.Tensor:
    """The pure-PyTorch chunked kernels the op falls back to, forward and exact backward, as an autograd function."""
    return _Fallback.apply(v, mode == "causal")


class _Fallback(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, causal):  # noqa: ANN001, ANN205 - autograd signature
        k = torch.ones(1, dtype=v.dtype)
        out, saved = torch_scan.forward(v.detach(), k, 0.0, 1.0, -2.0, causal)
        ctx.save_for_backward(out, saved, k)
        ctx.causal = causal
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        out, saved, k = ctx.saved_tensors
        return torch_scan.backward(grad_out, out, saved, k, ctx.causal), None


def _require_cpp_backend() -> str:
    backend = cpu_backend()
    if backend != "cpp":
        pytest.fail("the C++ BK-Core kernel did not load (cpu_backend() == %r): the op fell back to pure PyTorch; "
                    "see the warning above for the compiler error" % backend, pytrace=False)
    return backend


def _protocol(**extra) -> dict:
    return {"threads": torch.get_num_threads(), "cpu_backend": cpu_backend(), "timing": "wall clock, median",
            "measures": "forward + backward (autograd through the op)"} | extra


@pytest.mark.kernels
@pytest.mark.parametrize("mode", MODES)
def test_bk_core_speedup_vs_reference(mode, bench):
    """Fused op vs the Python-loop reference and vs the pure-PyTorch fallback, side by side, B = 8, N = 4096, CPU."""
    backend = _require_cpp_backend()
    b, n, fused_repeats, ref_repeats = 8, 4096, 7, 2
    x32, g32 = _inputs(b, n, torch.float32)
    x64, g64 = _inputs(b, n, torch.float64)
    for x, g in ((x32, g32), (x64, g64)):  # warm up (first call builds/loads the C++ kernel)
        _fwd_bwd(bk_core, x, g, mode)
        _fwd_bwd(_torch_fallback, x, g, mode)
    t32, t64, tfb, tref = [], [], [], []
    for r in range(fused_repeats):
        t32.append(_time_once(bk_core, x32, g32, mode))
        t64.append(_time_once(bk_core, x64, g64, mode))
        tfb.append(_time_once(_torch_fallback, x64, g64, mode))
        if r < ref_repeats:
            tref.append(_time_once(bk_core_reference, x64, g64, mode))
    fused32, fused64 = statistics.median(t32), statistics.median(t64)
    fallback, ref = statistics.median(tfb), statistics.median(tref)
    bench.finalize(Result(
        subject=f"bk-core-{mode}", target_section="bk_core",
        metrics={
            "fused_fp32_fwd_bwd_ms": fused32 * 1e3,
            "fused_fp64_fwd_bwd_ms": fused64 * 1e3,
            "fallback_fwd_bwd_ms": fallback * 1e3,
            "reference_fwd_bwd_ms": ref * 1e3,
            # same input dtype as the reference's float64 arithmetic: the conservative ratios
            "speedup_vs_reference": ref / fused64,
            "speedup_vs_fallback": fallback / fused64,
            "speedup_fp32_vs_reference": ref / fused32,
        },
        protocol=_protocol(
            B=b, N=n, seq_len=n, device="cpu", backend=backend,
            dtype="float32 and float64 (fused); float64 (fallback, reference)",
            repeats={"fused": fused_repeats, "fallback": fused_repeats, "reference": ref_repeats},
            paths={"fused": "torch.ops.lmbench.bk_core_fwd/bk_core_bwd (C++)",
                   "fallback": "harness.kernels.bk_core.torch_scan forward/backward (pure-PyTorch chunked scans)",
                   "reference": "harness.kernels.bk_core.reference.bk_core_reference (Python loop, autograd)"}),
    ))


@pytest.mark.kernels
@pytest.mark.parametrize("mode", MODES)
def test_bk_core_per_token_time_flat_in_n(mode, bench):
    """Tokens/s of the fused op at N = 4k ... 1M with B*N = 2^20 tokens per call: O(N) means a flat time per token."""
    backend = _require_cpp_backend()
    total, repeats = 1 << 20, 5
    lengths = [1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20]
    data = {n: _inputs(total // n, n, torch.float32) for n in lengths}
    for n in lengths:
        _fwd_bwd(bk_core, *data[n], mode)
    times: dict[int, list[float]] = {n: [] for n in lengths}
    for _ in range(repeats):
        for n in lengths:
            times[n].append(_time_once(bk_core, data[n][0], data[n][1], mode))
    per_token = {n: statistics.median(times[n]) / total for n in lengths}
    metrics = {}
    for n in lengths:
        metrics[f"ns_per_token_n{n}"] = per_token[n] * 1e9
        metrics[f"tokens_per_s_n{n}"] = 1.0 / per_token[n]
    metrics["per_token_ratio"] = per_token[lengths[-1]] / per_token[lengths[0]]  # 1M vs 4k
    bench.finalize(Result(
        subject=f"bk-core-{mode}", target_section="bk_core", metrics=metrics,
        protocol=_protocol(tokens_per_call=total, N=lengths, B=[total // n for n in lengths], seq_len=lengths[-1],
                           device="cpu", backend=backend, dtype="float32", repeats=repeats,
                           ratio="time per token at N = 1M over N = 4k",
                           paths={"fused": "torch.ops.lmbench.bk_core_fwd/bk_core_bwd (C++)"}),
    ))


def _peak_copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), best of a few: the measured peak to compare to."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    del src, dst
    return 2 * nbytes / best


def _cuda_time(fn: Callable[[], object], repeats: int = 10) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        ts.append(start.elapsed_time(end) / 1e3)
    return statistics.median(ts)


@pytest.mark.kernels
@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(8, 4096), (1, 1 << 20), (64, 1 << 16)], ids=["B8-N4k", "B1-N1M", "B64-N64k"])
def test_bk_core_gpu_bandwidth(mode, shape, bench):
    """GPU time of the Triton kernels and the fraction of the measured copy bandwidth they reach (forward)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    b, n = shape
    dev = torch.device("cuda")
    peak = _peak_copy_bandwidth(dev)
    x, grad = _inputs(b, n, torch.float32, device="cuda")
    with torch.no_grad():
        out = bk_core(x, mode=mode)
        fwd = _cuda_time(lambda: bk_core(x, mode=mode))
    fwd_bwd = _cuda_time(lambda: _fwd_bwd(bk_core, x, grad, mode))
    assert torch.isfinite(out).all()
    ref = bk_core_reference(x[:1, : min(n, 2048)].detach().double().cpu(), mode="causal") if mode == "causal" else None
    if ref is not None:  # causal outputs of a prefix do not depend on the rest of the row
        torch.testing.assert_close(out[:1, : ref.shape[1]].double().cpu(), ref, rtol=0, atol=2e-5)
    saved_bytes = 0 if mode == "causal" else 16
    bytes_fwd = b * n * (4 + 8 + saved_bytes)  # read v, write [Re, Im] out, write the saved inverse pivots
    achieved = bytes_fwd / fwd

    bench.finalize(Result(
        subject=f"bk-core-{mode}", target_section="bk_core_gpu",
        metrics={
            "gpu_fwd_ms": fwd * 1e3, "gpu_fwd_bwd_ms": fwd_bwd * 1e3, "tokens_per_s_fwd_bwd": b * n / fwd_bwd,
            "fwd_bytes": bytes_fwd, "fwd_bandwidth_gb_s": achieved / 1e9, "peak_copy_bandwidth_gb_s": peak / 1e9,
            "fwd_bandwidth_fraction": achieved / peak,
        },
        protocol={
            "B": b, "N": n, "seq_len": n, "dtype": "float32", "device": torch.cuda.get_device_name(dev),
            "repeats": 10, "timing": "CUDA events, median",
            "peak": "best of 10 device-to-device copies of 1 GiB (read + write bytes)",
            "bytes": "forward: read v (4 B) + write out (8 B) + saved state (16 B bidirectional, 0 causal) per token",
            "paths": {"fused": "triton_impl (3-pass chunked scans)"},
        },
    ))
