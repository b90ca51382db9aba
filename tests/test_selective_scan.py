"""Mamba's fused CPU kernels (selective scan, causal conv1d + SiLU) against independent float64 loops, and the model.

The reference recurrences below are written from the textbook definition, not from the kernels or from mamba.py:
    dt_t = softplus(delta_t + bias),  h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t,  y_t = C_t . h_t + D u_t,  y * silu(z)
and differentiated by autograd, so a wrong hand-written backward in the kernel cannot agree with them by accident.
The C++ extension is built once per machine (~1 min, cached in $LMBENCH_CACHE_DIR); everything else is small.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.kernels.selective_scan import (
    causal_conv1d_silu,
    conv_flops,
    cpu,
    op,
    selective_scan,
    selective_scan_flops,
)

GRAD_NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


@pytest.fixture(scope="session")
def ss_ext():
    """The compiled C++ kernels (built once per session, or loaded from the persistent cache)."""
    module = cpu.load_extension()
    if module is None:
        pytest.fail(f"the selective-scan C++ extension failed to build: {cpu.build_error()}")
    return module


# ---------------------------------------------------------------------------------------------------------------
# Independent references (float64 loops)
# ---------------------------------------------------------------------------------------------------------------
def reference_scan(u, delta, A, B, C, D, z, bias, softplus):
    """Sequential loop over time: u, delta, z (b, L, d); B, C (b, L, n); A (d, n); D, bias (d,)."""
    dt = delta + bias
    if softplus:
        dt = torch.log1p(torch.exp(dt))
    b, seq_len, d = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(seq_len):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        y = (h * C[:, t, None, :]).sum(-1) + D * u[:, t]
        if z is not None:
            y = y * z[:, t] * torch.sigmoid(z[:, t])
        ys.append(y)
    return torch.stack(ys, dim=1)


def reference_conv_silu(x, weight, bias):
    """out[t] = silu(bias + sum_k w[:, k] x[t - K + 1 + k]) with x = 0 before t = 0; x (b, L, d), weight (d, K)."""
    seq_len, k = x.shape[1], weight.shape[1]
    outs = []
    for t in range(seq_len):
        pre = bias.expand(x.shape[0], -1).clone()
        for j in range(k):
            s = t - k + 1 + j
            if s >= 0:
                pre = pre + weight[:, j] * x[:, s]
        outs.append(pre * torch.sigmoid(pre))
    return torch.stack(outs, dim=1)


def make_inputs(b, seq_len, d, n, seed, *, gated=True, softplus=True, strided=False):
    """Float64 inputs in the ranges Mamba sees (A < 0; without softplus, dt = delta + bias > 0)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    if strided:  # the model's layout: x and z are the halves of one projection, B and C slices of another
        xz = r(b, seq_len, 2 * d)
        u, z = xz[..., :d], xz[..., d:]
        bc = r(b, seq_len, 3 + 2 * n)
        B, C = bc[..., 3:3 + n], bc[..., 3 + n:]
    else:
        u, z, B, C = r(b, seq_len, d), r(b, seq_len, d), r(b, seq_len, n), r(b, seq_len, n)
    if softplus:
        delta, bias = r(b, seq_len, d) - 1.0, 0.5 * r(d)
    else:
        delta = torch.rand(b, seq_len, d, generator=g, dtype=torch.float64) * 0.5 + 0.01
        bias = torch.rand(d, generator=g, dtype=torch.float64) * 0.1
    A = -torch.exp(r(d, n))
    D = r(d)
    return [u, delta, A, B, C, D, z if gated else None, bias]


def run_fused(args, softplus, grad, dtype):
    leaves = [None if a is None else a.detach().to(dtype).requires_grad_(True) for a in args]
    u, delta, A, B, C, D, z, bias = leaves
    out = selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=softplus)
    present = [x for x in leaves if x is not None]
    grads = torch.autograd.grad(out, present, grad.to(dtype))
    return out.detach(), grads


def run_reference(args, softplus, grad):
    leaves = [None if a is None else a.detach().clone().requires_grad_(True) for a in args]
    out = reference_scan(*leaves, softplus)
    present = [x for x in leaves if x is not None]
    grads = torch.autograd.grad(out, present, grad)
    return out.detach(), grads


def assert_matches(fused, ref, names, tol):
    """Max abs error relative to the reference's scale (max(1, max |ref|)) per tensor."""
    out, grads = fused
    rout, rgrads = ref
    for name, a, e in [("out", out, rout)] + list(zip(names, grads, rgrads)):
        assert a.shape == e.shape, name
        err = float((a.double() - e).abs().max()) / max(1.0, float(e.abs().max()))
        assert err < tol, f"{name}: relative error {err:.3g} >= {tol}"


# ---------------------------------------------------------------------------------------------------------------
# The reference itself: the loop equals a closed form on a tiny case
# ---------------------------------------------------------------------------------------------------------------
def test_reference_matches_closed_form():
    # L = 2, one channel, one state: y_1 = C_1 (a_1 dt_0 B_0 u_0 + dt_1 B_1 u_1) + D u_1.
    u = torch.tensor([[[2.0], [3.0]]], dtype=torch.float64)
    delta = torch.tensor([[[0.5], [0.25]]], dtype=torch.float64)
    A = torch.tensor([[-1.5]], dtype=torch.float64)
    B = torch.tensor([[[0.7], [-0.2]]], dtype=torch.float64)
    C = torch.tensor([[[1.1], [0.9]]], dtype=torch.float64)
    D = torch.tensor([0.3], dtype=torch.float64)
    out = reference_scan(u, delta, A, B, C, D, None, torch.zeros(1, dtype=torch.float64), False)
    h0 = 0.5 * 0.7 * 2.0
    y0 = 1.1 * h0 + 0.3 * 2.0
    y1 = 0.9 * (torch.exp(torch.tensor(0.25 * -1.5, dtype=torch.float64)) * h0 + 0.25 * -0.2 * 3.0) + 0.3 * 3.0
    torch.testing.assert_close(out[0, :, 0], torch.stack([torch.tensor(y0, dtype=torch.float64), y1]),
                               rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------------------------
# Fused scan vs reference: values and all eight gradients
# ---------------------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    b=st.integers(1, 3),
    seq_len=st.integers(1, 70),  # crosses the 32-token checkpoint chunks
    d=st.integers(1, 40),  # crosses the 16-float / 8-double channel blocks, with partial blocks
    n=st.integers(1, 6),
    gated=st.booleans(),
    softplus=st.booleans(),
    strided=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_matches_reference_fp64(ss_ext, b, seq_len, d, n, gated, softplus, strided, seed):
    args = make_inputs(b, seq_len, d, n, seed, gated=gated, softplus=softplus, strided=strided)
    grad = torch.randn(b, seq_len, d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    names = [nm for nm, a in zip(GRAD_NAMES, args) if a is not None]
    assert_matches(run_fused(args, softplus, grad, torch.float64), run_reference(args, softplus, grad), names, 1e-10)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    b=st.integers(1, 3),
    seq_len=st.integers(1, 70),
    d=st.integers(1, 40),
    n=st.integers(1, 16),
    gated=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_matches_reference_fp32(ss_ext, b, seq_len, d, n, gated, seed):
    # float32 runs the vectorised exp / log1p polynomials: the model's path.
    args = make_inputs(b, seq_len, d, n, seed, gated=gated, softplus=True, strided=True)
    grad = torch.randn(b, seq_len, d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    # The reference sees the float32-rounded inputs, so only the kernel's arithmetic differs.
    args = [None if a is None else a.float().double() for a in args]
    names = [nm for nm, a in zip(GRAD_NAMES, args) if a is not None]
    assert_matches(run_fused(args, True, grad, torch.float32), run_reference(args, True, grad), names, 2e-5)


def test_extreme_inputs_stay_finite_and_exact(ss_ext):
    # Large |delta| (softplus in both tails), strongly decaying and near-1 transitions.
    args = make_inputs(2, 50, 20, 4, 7)
    args[1] = args[1] * 40.0
    args[2] = args[2] * torch.where(torch.rand(20, 4, generator=torch.Generator().manual_seed(0)) < 0.5, 1e-4, 50.0)
    grad = torch.randn(2, 50, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert_matches(run_fused(args, True, grad, torch.float64), run_reference(args, True, grad), GRAD_NAMES, 1e-10)
    f32 = run_fused([a.float().double() for a in args], True, grad, torch.float32)
    assert all(torch.isfinite(t).all() for t in (f32[0], *f32[1]))
    assert_matches(f32, run_reference([a.float().double() for a in args], True, grad), GRAD_NAMES, 1e-4)


@pytest.mark.parametrize("threads", [1, 4])
def test_thread_splits_agree(ss_ext, threads):
    # One batch row and several channel blocks: with more threads, channel groups get their own dB/dC partial sums.
    args = make_inputs(1, 45, 50, 3, 11)
    grad = torch.randn(1, 45, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused = run_fused(args, True, grad, torch.float64)
    finally:
        torch.set_num_threads(before)
    assert_matches(fused, run_reference(args, True, grad), GRAD_NAMES, 1e-10)


def test_api_defaults_and_validation(ss_ext):
    u, delta, A, B, C, _D, _z, _bias = make_inputs(2, 9, 5, 3, 3, softplus=False)
    out = selective_scan(u, delta, A, B, C)  # no D, no gate, no bias, no softplus
    zeros = torch.zeros(5, dtype=torch.float64)
    torch.testing.assert_close(out, reference_scan(u, delta, A, B, C, zeros, None, zeros, False), rtol=0, atol=1e-12)
    half = selective_scan(u.bfloat16(), delta.bfloat16(), A, B.bfloat16(), C.bfloat16())
    assert half.dtype == torch.bfloat16 and half.shape == u.shape
    with pytest.raises(ValueError, match="batch, L, D"):
        selective_scan(u[0], delta[0], A, B[0], C[0])


# ---------------------------------------------------------------------------------------------------------------
# Op registration: opcheck (fake kernels, autograd, schema) and the FLOP counter
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gated", [True, False])
def test_opcheck(ss_ext, dtype, gated):
    args = [None if a is None else a.to(dtype) for a in make_inputs(2, 37, 19, 4, 5, gated=gated, strided=True)]
    u, delta, A, B, C, D, z, bias = args
    fwd_args = (u, delta, A, B, C, D, z, bias, True)
    torch.library.opcheck(torch.ops.lmbench.selective_scan_fwd.default,
                          tuple(a.clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a
                                for a in fwd_args))
    out, ckpt = torch.ops.lmbench.selective_scan_fwd(*fwd_args)
    torch.library.opcheck(torch.ops.lmbench.selective_scan_bwd.default,
                          (torch.randn_like(out), u, delta, A, B, C, D, z, bias, ckpt, True))


def test_flop_counter_sees_the_op(ss_ext):
    from torch.utils.flop_counter import FlopCounterMode

    b, seq_len, d, n = 2, 40, 24, 5
    for gated in (True, False):
        args = [None if a is None else a.float().requires_grad_(True)
                for a in make_inputs(b, seq_len, d, n, 1, gated=gated)]
        u, delta, A, B, C, D, z, bias = args
        with FlopCounterMode(display=False) as fc:
            selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True).sum().backward()
        expect = sum(selective_scan_flops(b, seq_len, d, n, delta_softplus=True, gated=gated, backward=bw)
                     for bw in (False, True))
        assert fc.get_total_flops() == expect


# ---------------------------------------------------------------------------------------------------------------
# Causal depthwise conv1d + SiLU
# ---------------------------------------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(b=st.integers(1, 3), seq_len=st.integers(1, 140), d=st.integers(1, 40), k=st.integers(1, 5),
       strided=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_matches_reference(ss_ext, b, seq_len, d, k, strided, seed):
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(b, seq_len, 2 * d, generator=g, dtype=torch.float64)
    x = xz[..., :d] if strided else xz[..., :d].contiguous()
    w = torch.randn(d, k, generator=g, dtype=torch.float64)
    bias = torch.randn(d, generator=g, dtype=torch.float64)
    grad = torch.randn(b, seq_len, d, generator=g, dtype=torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, bias)]
    out = causal_conv1d_silu(*leaves)
    grads = torch.autograd.grad(out, leaves, grad)
    rleaves = [t.clone().requires_grad_(True) for t in (x, w, bias)]
    rout = reference_conv_silu(*rleaves)
    rgrads = torch.autograd.grad(rout, rleaves, grad)
    assert_matches((out.detach(), grads), (rout.detach(), rgrads), ["x", "weight", "bias"], 1e-12)
    # float32 too (the model's path)
    out32 = causal_conv1d_silu(x.float(), w.float(), bias.float())
    torch.testing.assert_close(out32.double(), reference_conv_silu(x.float().double(), w.float().double(),
                                                                   bias.float().double()), rtol=1e-5, atol=1e-5)


def test_conv_opcheck_and_conv1d_layout(ss_ext):
    x = torch.randn(2, 33, 2 * 20)[..., :20]
    w, bias = torch.randn(20, 1, 4), torch.randn(20)  # nn.Conv1d's weight layout (D, 1, K)
    torch.library.opcheck(torch.ops.lmbench.causal_conv1d_silu_fwd.default,
                          (x.clone().requires_grad_(True), w[:, 0].t().contiguous(), bias))
    torch.library.opcheck(torch.ops.lmbench.causal_conv1d_silu_bwd.default,
                          (torch.randn(2, 33, 20), x, w[:, 0].t().contiguous(), bias))
    torch.testing.assert_close(causal_conv1d_silu(x, w, bias), reference_conv_silu(x, w[:, 0], bias),
                               rtol=1e-5, atol=1e-6)
    from torch.utils.flop_counter import FlopCounterMode

    xg = x.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as fc:
        causal_conv1d_silu(xg, w, bias).sum().backward()
    assert fc.get_total_flops() == conv_flops(2, 33, 20, 4) + conv_flops(2, 33, 20, 4, backward=True)


# ---------------------------------------------------------------------------------------------------------------
# The whole model: fused kernels vs mamba.py's pscan, same weights
# ---------------------------------------------------------------------------------------------------------------
def _build_mamba(scan: str):
    from harness.models import get_model_spec

    spec = get_model_spec("mamba")
    cfg = spec.config(256, 64, "smoke")
    cfg.preset["scan"] = scan
    return spec.build(cfg)


def test_model_fused_equals_pscan(ss_ext):
    from transformers.models.mamba.modeling_mamba import MambaMixer

    from harness.models.base import count_parameters
    from harness.models.mamba_fused import FusedScanMambaMixer

    torch.manual_seed(0)
    fused, ref = _build_mamba("fused"), _build_mamba("pscan")
    ref.load_state_dict(fused.state_dict())
    mixers = [type(m) for m in fused.modules() if isinstance(m, MambaMixer)]
    assert mixers and all(t is FusedScanMambaMixer for t in mixers)
    assert all(type(m) is MambaMixer for m in ref.modules() if isinstance(m, MambaMixer))
    assert list(fused.state_dict()) == list(ref.state_dict())
    assert count_parameters(fused) == count_parameters(ref)

    ids = torch.randint(0, 256, (3, 64), generator=torch.Generator().manual_seed(1))
    fused.train(), ref.train()
    lf, lr = fused(ids), ref(ids)
    torch.testing.assert_close(lf, lr, rtol=1e-4, atol=1e-5)
    target = torch.randint(0, 256, (3, 64), generator=torch.Generator().manual_seed(2))
    for logits in (lf, lr):
        torch.nn.functional.cross_entropy(logits.reshape(-1, 256), target.reshape(-1)).backward()
    for (name, pf), (_, pr) in zip(fused.named_parameters(), ref.named_parameters()):
        scale = max(1e-3, float(pr.grad.abs().max()))
        err = float((pf.grad - pr.grad).abs().max()) / scale
        assert err < 1e-4, f"{name}: relative gradient error {err:.3g}"


def test_model_generation_cache_path_defers_to_hf(ss_ext):
    # With a cache (generation) the fused mixer hands over to HF's own forward: same logits as the fused path.
    torch.manual_seed(0)
    model = _build_mamba("fused").eval()
    ids = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        no_cache = model(ids)
        cached = model.inner(input_ids=ids, use_cache=True).logits
    torch.testing.assert_close(cached, no_cache, rtol=1e-4, atol=1e-5)


def test_model_passes_causality_guard(ss_ext):
    from harness.measure.causality import check_causality

    torch.manual_seed(0)
    result = check_causality(_build_mamba("fused"), 256, seq_len=48)
    assert not result.leak, result


def test_notes_name_the_fused_scan(ss_ext):
    from harness.models.hf import _mamba_notes

    notes = _mamba_notes()
    assert "fused lmbench::selective_scan" in notes and "failed" not in notes and " or " not in notes.split(";")[1]


# ---------------------------------------------------------------------------------------------------------------
# Build cache and fallback
# ---------------------------------------------------------------------------------------------------------------
def test_build_directory_honours_cache_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LMBENCH_CACHE_DIR", str(tmp_path))
    assert str(cpu.build_directory()).startswith(str(tmp_path / "torch_extensions" / "selective_scan"))


def test_fallback_warns_once_keeps_pscan_and_stays_exact(ss_ext, monkeypatch):
    from torch.utils import cpp_extension
    from transformers.models.mamba.modeling_mamba import MambaMixer

    from harness.models.hf import _mamba_notes

    def broken_load(*args, **kwargs):
        raise RuntimeError("Error building extension 'lmbench_selective_scan': simulated: no C++ compiler")

    monkeypatch.setattr(cpp_extension, "load", broken_load)
    cpu.reset()
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            model = _build_mamba("fused")
            args = make_inputs(2, 20, 6, 3, 4)
            grad = torch.randn(2, 20, 6, dtype=torch.float64)
            fused = run_fused(args, True, grad, torch.float64)  # the op itself runs the torch fallback
            conv = causal_conv1d_silu(args[0], torch.randn(6, 4, dtype=torch.float64), args[7])
        msgs = [str(w.message) for w in rec if "could not be built" in str(w.message)]
        assert len(msgs) == 1 and "simulated: no C++ compiler" in msgs[0] and "mamba.py" in msgs[0]
        assert op.cpu_backend() == "torch"
        assert all(type(m) is MambaMixer for m in model.modules() if isinstance(m, MambaMixer))
        notes = _mamba_notes()
        assert "mamba.py parallel scan" in notes and "failed to build" in notes
        assert_matches(fused, run_reference(args, True, grad), GRAD_NAMES, 1e-10)
        assert conv.shape == (2, 20, 6)
    finally:
        monkeypatch.undo()
        cpu.reset()
    assert op.cpu_backend() == "cpp"
