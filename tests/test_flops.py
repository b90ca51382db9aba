"""FLOP counting (``harness.measure.flops``): exact counts of known products, the formulas we register for what
``torch.utils.flop_counter`` misses or miscounts, and the Transformer against its analytic count.

Every expected value here is written from the shapes alone (2 FLOPs per multiply-add), never read back from the
counter, so a formula that drifts fails.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness.measure.flops import CONVENTION, count_flops, gpt2_analytic_forward_flops_per_token

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class EmbedHead(nn.Module):
    """ids -> embedding (d) -> linear head (V): one counted product, 2·d·V FLOPs per token forward."""

    def __init__(self, vocab: int, d: int, bias: bool) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.head = nn.Linear(d, vocab, bias=bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids))


@SETTINGS
@given(b=st.integers(1, 3), t=st.integers(2, 17), d=st.integers(1, 24), v=st.integers(2, 40), bias=st.booleans())
def test_a_known_matmul_is_counted_exactly(b, t, d, v, bias):
    torch.manual_seed(0)
    fc = count_flops(EmbedHead(v, d, bias), torch.randint(0, v, (b, t)))
    assert fc.tokens == b * t
    assert fc.forward == 2 * b * t * d * v  # bias adds and the embedding lookup are not counted
    # backward of the head: the gradient of its input and of its weight, each as costly as the forward
    assert fc.backward == 2 * fc.forward
    assert fc.train_per_token == 6 * d * v
    assert fc.to_dict()["convention"] == CONVENTION


def test_count_flops_leaves_the_model_as_it_was():
    model = EmbedHead(11, 5, True).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, torch.randint(0, 11, (2, 6)))
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention written out as two batched products (what the counter always saw)."""
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    return torch.softmax(scores, dim=-1) @ v


def _flops(fn, *args) -> tuple[int, int, dict[str, int]]:
    with FlopCounterMode(display=False) as fwd:
        out = fn(*args)
    with FlopCounterMode(display=False) as bwd:
        out.sum().backward()
    ops = {str(op): n for op, n in fwd.get_flop_counts().get("Global", {}).items()}
    return fwd.get_total_flops(), bwd.get_total_flops(), ops


@SETTINGS
@given(b=st.integers(1, 2), h=st.integers(1, 3), lq=st.integers(1, 12), lk=st.integers(1, 12), e=st.integers(1, 16))
def test_cpu_scaled_dot_product_attention_is_counted_like_its_math(b, h, lq, lk, e):
    """torch counts the CPU flash kernel as 0 FLOPs; with our formula it counts what the math path counts (the
    backward also recomputes the score matrix, one more q·kᵀ product). Equal head sizes for queries and values:
    the flash kernel's condition (otherwise torch falls back to the math path, which it counts itself)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, n, e, generator=g, requires_grad=True) for n in (lq, lk, lk))
    ev = e
    fwd, bwd, ops = _flops(torch.nn.functional.scaled_dot_product_attention, q, k, v)
    assert any("_scaled_dot_product_flash_attention_for_cpu" in op for op in ops), ops  # the kernel did run
    mfwd, mbwd, _ = _flops(_math_attention, q, k, v)
    assert fwd == mfwd == 2 * b * h * lq * lk * (e + ev)
    assert bwd == mbwd + 2 * b * h * lq * lk * e


@SETTINGS
@given(b=st.integers(1, 2), c=st.integers(1, 12), mult=st.integers(1, 2), k=st.integers(1, 5), n=st.integers(5, 20))
def test_grouped_convolution_backward_is_not_groups_times_too_large(b, c, mult, k, n):
    """A depthwise conv (groups = channels) costs K multiply-adds per output; its weight gradient costs the same as
    its forward, and so does its input gradient (torch 2.13's formula forgot ``groups`` in the weight gradient)."""
    conv = nn.Conv1d(c, c * mult, k, groups=c)
    x = torch.randn(b, c, n, requires_grad=True)
    fwd, bwd, _ = _flops(conv, x)
    out_len = n - k + 1
    assert fwd == 2 * b * c * mult * out_len * k
    assert bwd == 2 * fwd


@pytest.mark.parametrize("seq_len", [16, 64])
def test_transformer_count_matches_2n_plus_attention(seq_len):
    """The issue's check: the GPT-2 Transformer's forward FLOPs per token are 2·N (every weight matrix, tied head
    included) plus the attention term 4·n_layer·T·d, exactly; its backward is twice the forward for the matrix
    products plus the recomputed-free eager attention's own gradient products."""
    from harness.models import get_model_spec

    spec = get_model_spec("transformer")
    cfg = spec.config(256, seq_len, "smoke")
    p = cfg.preset
    torch.manual_seed(0)
    model = spec.build(cfg)
    fc = count_flops(model, torch.randint(0, 256, (2, seq_len)))
    analytic = gpt2_analytic_forward_flops_per_token(p["d_model"], p["n_layer"], 256, seq_len)
    assert fc.forward_per_token == analytic
    # 2·N from the model's own parameters: every 2-D weight except the position table, the head tied to wte
    n_matmul = sum(w.numel() for name, w in model.named_parameters() if w.dim() == 2 and "wpe" not in name)
    assert analytic == 2 * n_matmul + 4 * p["n_layer"] * seq_len * p["d_model"]
    # backward: grad of input and of weight per product (2x), except the embedding's lookup (no product)
    assert fc.backward_per_token == 2 * fc.forward_per_token
