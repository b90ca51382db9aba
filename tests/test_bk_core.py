"""BK-Core: the fused op (C++ / Triton / torch fallback) against the float64 loop reference and the dense inverse.

The C++ extension is built once per machine (~30-60 s, cached in $LMBENCH_CACHE_DIR); everything else is small.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.kernels.bk_core import (
    bk_core,
    bk_core_flops,
    bk_core_reference,
    cpu,
    cpu_backend,
    dense_resolvent_diag,
    op,
    torch_scan,
)

REPO = Path(__file__).resolve().parents[1]
MODES = ["causal", "bidirectional"]


@pytest.fixture(scope="session")
def bk_ext():
    """The compiled C++ kernel (built once per session, or loaded from the persistent cache)."""
    module = cpu.load_extension()
    if module is None:
        pytest.fail(f"the BK-Core C++ extension failed to build: {cpu._state['error']}")
    return module


def _inputs(b: int, n: int, seed: int, *, per_position: bool, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    v = (torch.rand(b, n, generator=g, dtype=torch.float64) * 6 - 3).to(dtype)
    coupling = (torch.rand(max(n - 1, 0), generator=g, dtype=torch.float64) + 0.5) if per_position else 1.0
    return v, coupling


def _ref_and_grad(v, coupling, mode, grad, **kw):
    x = v.detach().double().requires_grad_(True)
    out = bk_core_reference(x, mode=mode, coupling=coupling, **kw)
    (gx,) = torch.autograd.grad(out, x, grad.double())
    return out.detach(), gx


# ---------------------------------------------------------------------------------------------------------------
# The reference itself
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_position", [False, True])
def test_reference_matches_dense_inverse(mode, per_position):
    v, c = _inputs(3, 40, 1, per_position=per_position)
    ref = bk_core_reference(v, mode=mode, coupling=c, z=0.4 + 0.7j, h0=-1.5)
    dense = dense_resolvent_diag(v, mode=mode, coupling=c, z=0.4 + 0.7j, h0=-1.5)
    torch.testing.assert_close(ref, dense, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Fused op vs reference (values and exact gradients)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_position", [False, True])
@pytest.mark.parametrize("shape", [(4, 1), (3, 2), (5, 64), (2, 1500), (1, 3000)])  # (1, 3000): chunked C++ path
def test_fused_matches_reference_fp64(bk_ext, mode, per_position, shape):
    b, n = shape
    v, c = _inputs(b, n, 2, per_position=per_position)
    kw = dict(z=0.3 + 0.8j, h0=-2.0)
    grad = torch.randn(b, n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref, gref = _ref_and_grad(v, c, mode, grad, **kw)
    x = v.clone().requires_grad_(True)
    out = bk_core(x, mode=mode, coupling=c, **kw)
    (gx,) = torch.autograd.grad(out, x, grad)
    assert out.shape == (b, n, 2) and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-13)
    torch.testing.assert_close(gx, gref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_fused_matches_dense_inverse(bk_ext, mode):
    v, c = _inputs(4, 64, 4, per_position=True)
    torch.testing.assert_close(bk_core(v, mode=mode, coupling=c), dense_resolvent_diag(v, mode=mode, coupling=c),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_fused_float32_close_to_reference(bk_ext, mode):
    v, c = _inputs(3, 500, 5, per_position=True)
    out = bk_core(v.float(), mode=mode, coupling=c.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), bk_core_reference(v, mode=mode, coupling=c), rtol=0, atol=2e-6)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(bk_ext, mode):
    v, c = _inputs(2, 9, 6, per_position=True)
    x = v.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: bk_core(t, mode=mode, coupling=c, z=0.2 + 0.6j), (x,))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(bk_ext, mode, dtype):
    v, _ = _inputs(2, 13, 7, per_position=False, dtype=dtype)
    k_uniform = torch.tensor([1.0], dtype=dtype)
    k_pos = (torch.rand(12, dtype=dtype) + 0.5) ** 2
    for k in (k_uniform, k_pos):
        torch.library.opcheck(torch.ops.lmbench.bk_core_fwd.default,
                              (v.clone().requires_grad_(True), k, 0.1, 1.0, -2.0, mode))
        out, saved = torch.ops.lmbench.bk_core_fwd(v, k, 0.1, 1.0, -2.0, mode)
        torch.library.opcheck(torch.ops.lmbench.bk_core_bwd.default, (torch.randn_like(out), out, saved, k, mode))


def test_flop_counter_sees_the_op(bk_ext):
    from torch.utils.flop_counter import FlopCounterMode

    b, n = 3, 50
    for mode in MODES:
        x = torch.randn(b, n, requires_grad=True)
        with FlopCounterMode(display=False) as fc:
            bk_core(x, mode=mode).sum().backward()
        assert fc.get_total_flops() == bk_core_flops(b, n, mode) + bk_core_flops(b, n, mode, backward=True)


# ---------------------------------------------------------------------------------------------------------------
# Properties: the stability bound and causality
# ---------------------------------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 300),
    scale=st.sampled_from([0.1, 3.0, 100.0]),
    z_re=st.floats(-3, 3),
    z_im=st.floats(0.05, 3.0),
    coupling=st.floats(0.0, 3.0),
    mode=st.sampled_from(MODES),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_output_bounded_by_inverse_im_z(bk_ext, n, scale, z_re, z_im, coupling, mode, dtype, seed):
    v = torch.randn(2, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype) * scale
    out = bk_core(v, z=complex(z_re, z_im), coupling=coupling, mode=mode)
    assert torch.isfinite(out).all()
    mod = torch.linalg.vector_norm(out.double(), dim=-1)
    assert (mod <= (1.0 / z_im) * (1 + 1e-5)).all()
    assert (out[..., 1] >= 0).all()  # Im G > 0 for Im z > 0 (Herglotz)


@pytest.mark.parametrize("shape", [(3, 200), (1, 5000)])  # (1, 5000) runs the chunked C++ path
def test_causal_outputs_ignore_the_future_bitwise(bk_ext, shape):
    b, n = shape
    v, c = _inputs(b, n, 8, per_position=True, dtype=torch.float32)
    base = bk_core(v, mode="causal", coupling=c)
    for t in (0, n // 3, n - 2):
        w = v.clone()
        w[:, t + 1:] += torch.randn_like(w[:, t + 1:])
        pert = bk_core(w, mode="causal", coupling=c)
        assert torch.equal(pert[:, : t + 1], base[:, : t + 1])
        assert not torch.equal(pert[:, t + 1:], base[:, t + 1:])
    # bidirectional mode is not causal (the audit's leak): the past does change
    bi, bi_pert = bk_core(v, mode="bidirectional", coupling=c), bk_core(w, mode="bidirectional", coupling=c)
    assert not torch.equal(bi[:, : n - 1], bi_pert[:, : n - 1])


@pytest.mark.parametrize("mode", MODES)
def test_million_tokens_fp32_finite_and_close_to_fp64(bk_ext, mode):
    n = 2**20
    v = torch.rand(1, n, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 6 - 3
    out64 = bk_core(v, mode=mode)
    x32 = v.float().requires_grad_(True)
    out32 = bk_core(x32, mode=mode)
    assert torch.isfinite(out32).all()
    assert (out32.double() - out64).abs().max().item() < 1e-5
    out32.sum().backward()
    assert torch.isfinite(x32.grad).all()


# ---------------------------------------------------------------------------------------------------------------
# Chunked (parallel) paths equal the sequential ones
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpp_chunked_path_is_bitwise_sequential(bk_ext, causal, dtype):
    v, c = _inputs(3, 4001, 10, per_position=True, dtype=dtype)
    k = (c * c).to(dtype)
    seq = 1 << 40  # min_chunk larger than N: whole rows, no chunks
    o0, s0 = bk_ext.forward(v, k, 0.2, 0.9, -2.0, causal, seq)
    g = torch.randn_like(o0)
    g0 = bk_ext.backward(g, o0, s0, k, causal, seq)
    for min_chunk in (1, 7, 300):
        bk_ext.fixup_steps(True)
        o, s = bk_ext.forward(v, k, 0.2, 0.9, -2.0, causal, min_chunk)
        gg = bk_ext.backward(g, o, s, k, causal, min_chunk)
        assert torch.equal(o, o0) and torch.equal(s, s0) and torch.equal(gg, g0)
    # min_chunk=300 gives 13 chunks per row; the fix-ups converge after a few dozen tokens per chunk instead of
    # re-running whole chunks (passes: 1 forward + 1 backward recursion causal, 2 + 2 bidirectional)
    passes = 2 if causal else 4
    assert 0 < bk_ext.fixup_steps(True) < 0.1 * passes * v.numel()


@pytest.mark.parametrize("causal", [True, False])
def test_torch_chunked_scan_equals_sequential(causal):
    v, c = _inputs(2, 777, 11, per_position=True)
    k = c * c
    o_seq, s_seq = torch_scan.forward(v, k, 0.1, 0.8, -2.0, causal, chunk=None)
    g = torch.randn_like(o_seq)
    g_seq = torch_scan.backward(g, o_seq, s_seq, k, causal, chunk=None)
    torch.testing.assert_close(o_seq, bk_core_reference(v, coupling=c, z=0.1 + 0.8j,
                                                        mode="causal" if causal else "bidirectional"),
                               rtol=0, atol=1e-13)
    for chunk in (1, 5, 64, 776):
        o, s = torch_scan.forward(v, k, 0.1, 0.8, -2.0, causal, chunk=chunk)
        torch.testing.assert_close(o, o_seq, rtol=0, atol=1e-13)
        torch.testing.assert_close(s, s_seq, rtol=0, atol=1e-13)
        torch.testing.assert_close(torch_scan.backward(g, o, s, k, causal, chunk=chunk), g_seq, rtol=0, atol=1e-12)


def test_torch_chunked_scan_fp32_long_row():
    """The audit's check: renormalised Moebius chunks in fp32 at N = 65536 stay within ~1e-6 of fp64."""
    v, _ = _inputs(1, 65536, 12, per_position=False)
    k = torch.ones(1, dtype=torch.float64)
    o64, _ = torch_scan.forward(v, k, 0.0, 1.0, -2.0, False, chunk=256)
    o32, _ = torch_scan.forward(v.float(), k.float(), 0.0, 1.0, -2.0, False, chunk=256)
    assert (o32.double() - o64).abs().max().item() < 5e-6


# ---------------------------------------------------------------------------------------------------------------
# Triton kernels under the interpreter (a subprocess, since TRITON_INTERPRET must be set before triton is imported)
# ---------------------------------------------------------------------------------------------------------------
_TRITON_SCRIPT = textwrap.dedent(
    """
    import json, torch
    from harness.kernels.bk_core import triton_impl, bk_core_reference
    res = []
    # (B, N, chunk, block_c, dtypes): N not a multiple of the chunk; several carry tiles (block_c = 4 < 10 chunks);
    # exactly one chunk; a single token
    cases = [(2, 37, 8, 128, (torch.float64, torch.float32)), (1, 40, 4, 4, (torch.float64,)),
             (2, 16, 16, 128, (torch.float32,)), (1, 1, 4, 128, (torch.float64,))]
    for b, n, chunk, block_c, dtypes in cases:
        g = torch.Generator().manual_seed(b * 1000 + n)
        v = torch.rand(b, n, generator=g, dtype=torch.float64) * 6 - 3
        c = torch.rand(max(n - 1, 0), generator=g, dtype=torch.float64) + 0.5
        for mode in ("causal", "bidirectional"):
            x = v.clone().requires_grad_(True)
            ref = bk_core_reference(x, mode=mode, coupling=c, z=0.2 + 0.9j)
            up = torch.randn(b, n, 2, generator=g, dtype=torch.float64)
            (gref,) = torch.autograd.grad(ref, x, up)
            for dt in dtypes:
                k = (c * c).to(dt)
                out, saved = triton_impl.forward(v.to(dt), k, 0.2, 0.9, -2.0, mode == "causal", chunk=chunk,
                                                 block_c=block_c)
                gv = triton_impl.backward(up.to(dt), out, saved, k, mode == "causal", chunk=chunk, block_c=block_c)
                res.append(dict(b=b, n=n, chunk=chunk, mode=mode, dtype=str(dt),
                                fwd=(out.double() - ref).abs().max().item(),
                                bwd=(gv.double() - gref).abs().max().item()))
    print("RESULT" + json.dumps(res))
    """
)


def test_triton_kernels_match_reference_under_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    results = json.loads(line[len("RESULT"):])
    assert len(results) == 10
    for r in results:
        tol = 1e-12 if r["dtype"] == "torch.float64" else 2e-6
        assert r["fwd"] < tol and r["bwd"] < tol * 10, r


# ---------------------------------------------------------------------------------------------------------------
# Build cache and fallback
# ---------------------------------------------------------------------------------------------------------------
def test_build_directory_honours_cache_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LMBENCH_CACHE_DIR", str(tmp_path))
    assert str(cpu.build_directory()).startswith(str(tmp_path / "torch_extensions" / "bk_core"))


def test_stale_build_lock_is_removed(tmp_path):
    lock = tmp_path / "lock"
    lock.write_text("")
    cpu._clear_stale_lock(tmp_path)
    assert lock.exists()  # fresh: a build may be running
    old = lock.stat().st_mtime - cpu.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="stale build lock"):
        cpu._clear_stale_lock(tmp_path)
    assert not lock.exists()


def test_second_process_loads_cached_extension_without_rebuilding(bk_ext):
    so = Path(bk_ext.__file__)
    before = so.stat().st_mtime_ns
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    code = "from harness.kernels.bk_core import cpu; import sys; sys.exit(cpu.load_extension() is None)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert so.stat().st_mtime_ns == before


def test_fallback_warns_once_and_stays_correct(bk_ext, monkeypatch):
    from torch.utils import cpp_extension

    def broken_load(*args, **kwargs):
        raise RuntimeError("Error building extension 'lmbench_bk_core': simulated: no C++ compiler")

    monkeypatch.setattr(cpp_extension, "load", broken_load)
    cpu.reset()
    try:
        v, c = _inputs(2, 50, 13, per_position=True)
        x = v.clone().requires_grad_(True)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            out = bk_core(x, mode="bidirectional", coupling=c)
            out2 = bk_core(x, mode="causal", coupling=c)
            (out.sum() + out2.sum()).backward()
        msgs = [str(w.message) for w in rec if "could not be built" in str(w.message)]
        assert len(msgs) == 1 and "simulated: no C++ compiler" in msgs[0]
        assert cpu_backend() == "torch"
        torch.testing.assert_close(out, bk_core_reference(v, mode="bidirectional", coupling=c), rtol=0, atol=1e-13)
        xr = v.clone().requires_grad_(True)
        (bk_core_reference(xr, mode="bidirectional", coupling=c).sum()
         + bk_core_reference(xr, mode="causal", coupling=c).sum()).backward()
        torch.testing.assert_close(x.grad, xr.grad, rtol=0, atol=1e-12)
    finally:
        monkeypatch.undo()
        cpu.reset()
    assert cpu_backend() == "cpp"


# ---------------------------------------------------------------------------------------------------------------
# API details
# ---------------------------------------------------------------------------------------------------------------
def test_api_shapes_dtypes_and_validation(bk_ext):
    v = torch.randn(20, dtype=torch.float64)
    torch.testing.assert_close(bk_core(v), bk_core_reference(v), rtol=0, atol=1e-13)
    assert bk_core(v).shape == (20, 2)
    vb = torch.randn(2, 30).bfloat16()
    out = bk_core(vb, mode="bidirectional")
    assert out.dtype == torch.bfloat16 and out.shape == (2, 30, 2)
    assert bk_core(torch.randn(0, 5)).shape == (0, 5, 2)
    assert bk_core(torch.randn(2, 0)).shape == (2, 0, 2)
    c = torch.tensor(0.7, dtype=torch.float64)
    torch.testing.assert_close(bk_core(v, coupling=c), bk_core(v, coupling=0.7))
    for mode in MODES:  # the uniform (stride-0) and per-position (kpad) coupling paths agree bit for bit
        xs = [torch.randn(3, 700, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
              for _ in range(2)]
        a = bk_core(xs[0], mode=mode, coupling=0.7)
        b = bk_core(xs[1], mode=mode, coupling=torch.full((699,), 0.7, dtype=torch.float64))
        a.sum().backward()
        b.sum().backward()
        assert torch.equal(a, b) and torch.equal(xs[0].grad, xs[1].grad)
    with pytest.raises(ValueError):
        bk_core(v, mode="anticausal")
    with pytest.raises(ValueError):
        bk_core(v, z=1.0 - 0.5j)
    with pytest.raises(ValueError):
        bk_core(v, coupling=torch.ones(7))
    with pytest.raises(ValueError):
        bk_core(torch.randn(2, 3, 4))
    with pytest.raises(TypeError):
        bk_core(torch.ones(3, dtype=torch.long))
    assert op.FLOPS_PER_TOKEN == {"causal": (11, 15), "bidirectional": (32, 40)}
