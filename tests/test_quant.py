"""Quantization library (harness.quant): RTN math properties, exact bit-packing, torchao agreement, scope and
packed size on the built-in models. Expected numbers are computed by hand from the architectures, not by the code
under test."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from harness.models import MODELS, count_parameters, get_model_spec
from harness.quant import quantize_model, torchao_path
from harness.quant.packing import pack_codes, unpack_codes
from harness.quant.rtn import EPS, QuantizedMatrix, fake_quantize_activations, qrange, quantize

VOCAB = 256
BUILTIN = ["transformer", "llama", "mamba"] + (["resnet-bk"] if "resnet-bk" in MODELS else [])
HAS_TORCHAO = torchao_path.torchao_version() is not None
needs_torchao = pytest.mark.skipif(not HAS_TORCHAO, reason="torchao not installed (extra [quant])")


def _build(name: str, seed: int = 0) -> torch.nn.Module:
    spec = get_model_spec(name)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spec.build(spec.config(VOCAB, 64, "smoke")).eval()


# ----------------------------------------------------------------------------------------------- RTN properties

matrices = st.integers(1, 4).flatmap(lambda r: st.integers(1, 40).flatmap(lambda c: arrays(
    np.float32, (r, c), elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False))))
schemes = st.tuples(st.sampled_from([2, 3, 4, 8]), st.one_of(st.none(), st.integers(1, 16)), st.booleans())


def _per_element_scale(q: QuantizedMatrix) -> torch.Tensor:
    cols = q.codes.shape[1]
    return q.scales.repeat_interleave(q.group_size, dim=1)[:, :cols]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(matrices, schemes)
def test_error_at_most_half_a_step_and_scales_positive(w, scheme):
    bits, group, symmetric = scheme
    w = torch.from_numpy(w)
    q = quantize(w, bits, group, symmetric=symmetric)
    qmin, qmax = qrange(bits)
    assert (q.scales > 0).all() and torch.isfinite(q.scales).all()
    assert int(q.codes.min()) >= qmin and int(q.codes.max()) <= qmax
    step = _per_element_scale(q)
    err = (w - q.dequantize()).abs()
    # half a step, plus float32 rounding of w * (1 / scale) and of the dequantization (a few ulp of |w|)
    assert (err <= 0.5 * step * (1 + 1e-5) + 4e-7 * w.abs()).all(), (err / step).max()


def _group_extreme_on_a_tie(w: np.ndarray, bits: int, group: int | None) -> bool:
    """Asymmetric only: does a group's min(w, 0)/scale or max(w, 0)/scale sit on a rounding tie (k + 1/2)?

    There the zero point (rounded from min/scale by division) and the code of the extreme (rounded from
    w * (1/scale), torchao's order) can round to different sides, so the dequantized group spans one step less
    and a second pass picks another scale. Example: [-1000, 1000] at int2, min/scale = -1.5 exactly.
    """
    qmin, qmax = qrange(bits)
    g = w.shape[1] if group is None else min(group, w.shape[1])
    for row in w.astype(np.float64):
        for start in range(0, len(row), g):
            chunk = row[start:start + g]
            lo, hi = min(chunk.min(), 0.0), max(chunk.max(), 0.0)
            scale = (hi - lo) / (qmax - qmin)
            if scale > 0 and any(abs(abs(v - math.floor(v)) - 0.5) < 1e-3 for v in (lo / scale, hi / scale)):
                return True
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(matrices, schemes)
def test_requantizing_dequantized_weights_is_idempotent(w, scheme):
    bits, group, symmetric = scheme
    assume(symmetric or not _group_extreme_on_a_tie(w, bits, group))  # documented exception, see the helper
    q1 = quantize(torch.from_numpy(w), bits, group, symmetric=symmetric)
    d1 = q1.dequantize()
    q2 = quantize(d1, bits, group, symmetric=symmetric)
    assert torch.equal(q2.codes, q1.codes)
    if not symmetric:
        assert torch.equal(q2.zero_points, q1.zero_points)
    # The recomputed scale may differ by float rounding (fl(fl(n*s)/n) != s for some s): a few ulp.
    torch.testing.assert_close(q2.dequantize(), d1, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_and_constant_groups(bits, symmetric):
    w = torch.zeros(4, 8)
    w[1] = 0.37  # constant positive group
    w[2] = -2.5  # constant negative group
    w[3, :4] = 1e-30  # tiny constant half-group next to zeros
    q = quantize(w, bits, 4, symmetric=symmetric)
    assert (q.scales >= EPS).all()
    d = q.dequantize()
    assert torch.equal(d[0], torch.zeros(8))  # all-zero row: exactly zero, scale clamped to eps
    torch.testing.assert_close(d, w, rtol=1e-6, atol=0.0)  # a constant group lands on a grid end exactly


def test_hand_computed_codes():
    # int2 asymmetric, one group: scale = (1 - (-1)) / 3, zero point = -2 - round(-1.5) = 0 (half to even).
    q = quantize(torch.tensor([[-1.0, 0.0, 0.5, 1.0]]), 2, None, symmetric=False)
    assert q.codes.tolist() == [[-2, 0, 1, 1]] and q.zero_points.tolist() == [[0]]
    torch.testing.assert_close(q.scales, torch.tensor([[2 / 3]]))
    torch.testing.assert_close(q.dequantize(), torch.tensor([[-4 / 3, 0.0, 2 / 3, 2 / 3]]))
    # int4 symmetric: scale = max(8 / 8, 3 / 7) = 1, so the codes are the values themselves (no clipping at -8).
    q = quantize(torch.tensor([[-8.0, 3.0, 2.0]]), 4, None, symmetric=True)
    assert q.codes.tolist() == [[-8, 3, 2]] and q.zero_points is None and q.scales.item() == 1.0


def test_ragged_last_group_has_its_own_scale():
    w = torch.cat([torch.full((1, 4), 0.1), torch.full((1, 2), 100.0)], dim=1)  # groups of 4: [0.1 x4], [100 x2]
    q = quantize(w, 4, 4, symmetric=False)
    assert q.scales.shape == (1, 2)
    torch.testing.assert_close(q.dequantize(), w, rtol=1e-6, atol=0.0)


def test_rejects_non_finite_weights():
    with pytest.raises(ValueError, match="non-finite"):
        quantize(torch.tensor([[1.0, float("nan")]]), 4, None, symmetric=False)


# ------------------------------------------------------------------------------------------------------ packing

@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8).flatmap(lambda b: st.tuples(st.just(b), st.lists(st.integers(*qrange(b)), max_size=300))))
def test_pack_unpack_exact(case):
    bits, values = case
    codes = torch.tensor(values, dtype=torch.int8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == math.ceil(len(values) * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, len(values)), codes)


def test_pack_layout_by_hand():
    # Unsigned offsets u = code - qmin, least significant bit first, codes straddle bytes.
    assert pack_codes(torch.tensor([-8, 7]), 4).tolist() == [0xF0]  # u = 0, 15
    assert pack_codes(torch.tensor([-2, -1, 0, 1]), 2).tolist() == [0b11100100]  # u = 0, 1, 2, 3
    assert pack_codes(torch.tensor([-3, -2, -1]), 3).tolist() == [0b11010001, 0]  # u = 1, 2, 3 -> 9 bits


def test_pack_rejects_out_of_range_codes():
    with pytest.raises(ValueError, match="range"):
        pack_codes(torch.tensor([8]), 4)


# --------------------------------------------------------------------------------------- torchao agreement


def _weights() -> torch.Tensor:
    torch.manual_seed(1)
    w = torch.randn(48, 128) * 0.05
    w[3] = 0.0  # all-zero row
    w[5, :32] = 0.7  # constant group
    w[7] *= 1e-6  # tiny row
    return w


@needs_torchao
@pytest.mark.parametrize("bits,group,symmetric", [(8, None, True), (4, 32, False)])
def test_torchao_and_ours_give_identical_codes_and_weights(bits, group, symmetric):
    w = _weights()
    lin = torch.nn.Sequential(torch.nn.Linear(128, 48))
    lin[0].weight.data.copy_(w)
    theirs = torchao_path.quantize_linears(lin, ["0"], bits, group, symmetric=symmetric, act_bits=None)["0"]
    ours = quantize(w, bits, group, symmetric=symmetric)
    assert torch.equal(theirs.codes, ours.codes) and torch.equal(theirs.scales, ours.scales)
    assert torch.equal(lin[0].weight.dequantize(), ours.dequantize())


@needs_torchao
def test_torchao_and_ours_quantize_activations_identically():
    w, x = _weights(), torch.randn(2, 5, 128)
    lin = torch.nn.Sequential(torch.nn.Linear(128, 48))
    lin[0].weight.data.copy_(w)
    bias = lin[0].bias.detach().clone()
    torchao_path.quantize_linears(lin, ["0"], 4, 32, symmetric=False, act_bits=8)
    ours = torch.nn.functional.linear(fake_quantize_activations(x), quantize(w, 4, 32, symmetric=False).dequantize(),
                                      bias)
    with torch.no_grad():
        torch.testing.assert_close(lin(x), ours, rtol=0, atol=1e-6)


@needs_torchao
def test_model_logits_match_between_paths():
    a, b = _build("llama"), _build("llama")
    ra = quantize_model(a, "int4", group_size=32)
    rb = quantize_model(b, "int4", group_size=32, prefer_torchao=False)
    assert ra.path == "torchao:IntxWeightOnlyConfig+lmbench-rtn" and rb.path == "lmbench-rtn"
    assert ra.packed_bytes == rb.packed_bytes and ra.params_by_width == rb.params_by_width
    ids = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(a(ids), b(ids), rtol=1e-5, atol=1e-5)


def test_falls_back_to_our_path_without_torchao(monkeypatch):
    monkeypatch.setattr(torchao_path, "torchao_version", lambda: None)
    m = _build("transformer")
    report = quantize_model(m, "int8")
    assert report.path == "lmbench-rtn" and report.torchao_version is None
    assert any("torchao not installed" in n for n in report.notes)
    assert set(report.module_paths.values()) == {"lmbench-rtn"}


# ---------------------------------------------------------------------------------------- scope on real models

def _matrix_params(name: str, d: int, preset: dict) -> int:
    """Weight-matrix parameters of the smoke presets, from the architectures (biases, norms, embeddings excluded)."""
    n_layer = preset["n_layer"]
    if name == "transformer":  # c_attn 3d², c_proj d², c_fc 4d², mlp c_proj 4d²
        return 12 * d * d * n_layer
    if name == "llama":  # q, k, v, o + gate, up, down
        return (4 * d * d + 3 * d * preset["d_ff"]) * n_layer
    if name == "mamba":  # in_proj d→2·d_in, x_proj d_in→(dt_rank + 2·16), dt_proj dt_rank→d_in, out_proj d_in→d
        d_in, dt_rank = 2 * d, math.ceil(d / 16)
        return (d * 2 * d_in + d_in * (dt_rank + 32) + dt_rank * d_in + d_in * d) * n_layer
    # resnet-bk: E experts of D·H twice + router D·E + bk_proj 2·D; v_proj (D→1) stays fp32
    e, h = preset["n_experts"], preset["d_expert"]
    return (2 * e * d * h + d * e + 2 * d) * n_layer


@pytest.mark.parametrize("name", BUILTIN)
def test_scope_counts_on_builtin_models(name):
    model = _build(name)
    total = count_parameters(model)["total"]
    preset = get_model_spec(name).presets["smoke"]
    report = quantize_model(model, "int4")
    expected = _matrix_params(name, preset["d_model"], preset)
    assert report.params_by_width == {"int4": expected, "fp32": total - expected}
    assert any("tied" in k and "embedding" in why for k, why in report.kept.items())  # the tied table stays fp32
    assert any("norm" in why for why in report.kept.values())
    if name == "resnet-bk":
        kept_v = {k: why for k, why in report.kept.items() if k.endswith("v_proj")}
        assert len(kept_v) == preset["n_layer"] and all("BK-Core potential" in w for w in kept_v.values())
        assert "blocks.0.moe.w1" in report.quantized and report.module_paths["blocks.0.moe.w1"] == "lmbench-rtn"


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("bits", ["fp16", "bf16", "int8", "int4"])
def test_quantized_models_still_map_ids_to_logits(name, bits):
    model = _build(name)
    report = quantize_model(model, bits)
    ids = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        out = model(ids)
    assert out.shape == (2, 12, VOCAB) and out.dtype == torch.float32 and torch.isfinite(out).all()
    if bits in ("fp16", "bf16"):
        assert report.path == "cast"
        assert bits in report.params_by_width
        if name == "mamba":  # measured with transformers 5.23: its CPU path cannot compute in fp16/bf16
            assert report.compute_dtype == bits or any("rounded weights in fp32" in n for n in report.notes)
        else:
            assert report.compute_dtype == bits


def test_quantized_weights_lie_on_the_grid():
    model = _build("resnet-bk")
    quantize_model(model, "int3")
    w1 = model.blocks[0].moe.w1.detach()[2].t()  # expert 2, rows = output channels
    again = quantize(w1, 3, 32, symmetric=False)
    torch.testing.assert_close(again.dequantize(), w1, rtol=1e-6, atol=0.0)
    assert not torch.equal(_build("resnet-bk").blocks[0].moe.w1[2], model.blocks[0].moe.w1[2])


def test_tied_head_is_quantized_once_and_stays_tied():
    model = _build("transformer")
    inner = model.inner
    report = quantize_model(model, "int4", include_head=True)
    assert inner.lm_head.weight is inner.transformer.wte.weight
    assert "inner.transformer.wte.weight" in report.quantized
    assert "inner.transformer.wpe" in report.kept  # position table: an embedding, not the head
    assert report.params_by_width["int4"] == 12 * 64 * 64 * 2 + VOCAB * 64
    assert any("tied to inner.lm_head.weight" in n for n in report.notes)
    bk = _build("resnet-bk")  # ResNet-BK has no head module: it declares tied_head = "tok_emb"
    assert "tok_emb.weight" in quantize_model(bk, "int8", include_head=True).quantized


def test_model_declared_and_caller_patterns_are_honoured():
    model = _build("llama")
    report = quantize_model(model, "int8", keep_high_precision={"*.mlp.down_proj": "sensitive"})
    kept = [k for k, why in report.kept.items() if why.endswith("sensitive")]
    assert len(kept) == 2 and not any("down_proj" in q for q in report.quantized)


def test_act_bits_runs_on_every_path():
    model = _build("resnet-bk")
    report = quantize_model(model, "int4", act_bits=8)
    assert report.act_bits == 8 and any("activation" in n for n in report.notes)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randint(0, VOCAB, (1, 9)))).all()


def test_invalid_arguments():
    with pytest.raises(ValueError, match="bits"):
        quantize_model(torch.nn.Linear(2, 2), "int5")
    with pytest.raises(ValueError, match="act_bits"):
        quantize_model(torch.nn.Linear(2, 2), "bf16", act_bits=8)


# ------------------------------------------------------------------------------------------------ packed size

def test_packed_size_by_hand_transformer_int4():
    # d = 64, 2 layers; int4 groups of min(128, in): c_attn/attn.c_proj/c_fc have in = 64 (one group per row:
    # 3d + d + 4d rows), mlp.c_proj has in = 4d = 256 (two groups per row, d rows).
    d, n_layer = 64, 2
    codes = 12 * d * d * n_layer
    groups = (3 * d + d + 4 * d + 2 * d) * n_layer
    model = _build("transformer")
    fp32 = count_parameters(model)["total"] - codes
    report = quantize_model(model, "int4")
    assert report.size_breakdown == {"codes": codes // 2, "scales": 4 * groups, "zero_points": groups // 2,
                                     "high_precision": 4 * fp32}
    assert report.packed_bytes == codes // 2 + 4 * groups + groups // 2 + 4 * fp32


def test_packed_size_int3_counts_partial_bytes_and_cast_sizes():
    lin = torch.nn.Linear(10, 3, bias=False)  # 30 codes at 3 bits = 90 bits -> 12 bytes; 3 rows x 1 group
    report = quantize_model(lin, "int3")
    assert report.size_breakdown == {"codes": 12, "scales": 12, "zero_points": 2, "high_precision": 0}
    model = _build("llama")
    total = count_parameters(model)["total"]
    assert quantize_model(_build("llama"), "fp32").packed_bytes == 4 * total
    assert quantize_model(model, "bf16").packed_bytes == 2 * total
