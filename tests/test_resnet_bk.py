"""ResNet-BK model entries: shapes at any length, size parity with the transformer, router gradient, causality
(causal variant exact, bidirectional variant leaks), trainability, and that the fused ``bk_core`` op is what runs."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("harness.kernels.bk_core")

import harness.kernels.bk_core as bk_pkg  # noqa: E402
from harness.models import (  # noqa: E402
    count_parameters,
    default_model_names,
    get_model_spec,
    resnet_bk,  # noqa: E402
)
from harness.models.base import BUDGETS, ModelConfig  # noqa: E402

VOCAB = 256
NAMES = ("resnet-bk", "resnet-bk-bidir")


def _build(name: str, budget: str = "smoke", max_seq_len: int = 64, seed: int = 0, **overrides) -> torch.nn.Module:
    spec = get_model_spec(name)
    cfg = spec.config(VOCAB, max_seq_len, budget)
    if overrides:
        cfg = ModelConfig(cfg.vocab_size, cfg.max_seq_len, cfg.budget, {**cfg.preset, **overrides})
    torch.manual_seed(seed)
    return spec.build(cfg)


def test_specs_registered():
    causal, bidir = get_model_spec("resnet-bk"), get_model_spec("resnet-bk-bidir")
    assert causal.causal and causal.default and causal.family == "resnet-bk"
    assert "causal BK-Core" in causal.notes and "lmbench::bk_core" in causal.notes
    assert not bidir.causal and not bidir.default and "future" in bidir.notes
    assert "resnet-bk" in default_model_names() and "resnet-bk-bidir" not in default_model_names()
    assert _build("resnet-bk").mode == "causal" and _build("resnet-bk-bidir").mode == "bidirectional"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seq_len", [1, 7, 128, 300])
def test_any_sequence_length(name, seq_len):
    model = _build(name, max_seq_len=64)  # 300 > max_seq_len: there is no position table to run out of
    ids = torch.randint(0, VOCAB, (2, seq_len))
    with torch.no_grad():
        logits = model(ids)
    assert logits.shape == (2, seq_len, VOCAB)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_no_position_table_and_tied_head():
    model = _build("resnet-bk")
    embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    assert len(embeddings) == 1 and embeddings[0].num_embeddings == VOCAB
    counts = count_parameters(model)
    assert counts["total"] - counts["non_embedding"] == VOCAB * resnet_bk.PRESETS["smoke"]["d_model"]


@pytest.mark.parametrize("budget", BUDGETS)
def test_presets_match_transformer_non_embedding_count(budget):
    ref = count_parameters(_build("transformer", budget))["non_embedding"]
    for name in NAMES:
        ours = count_parameters(_build(name, budget))["non_embedding"]
        assert abs(ours - ref) <= 0.10 * ref, (budget, name, ours, ref)


@pytest.mark.parametrize("top_k", [1, 2])
def test_router_receives_gradient(top_k):
    model = _build("resnet-bk", top_k=top_k)
    ids = torch.randint(0, VOCAB, (2, 32))
    logits = model(ids)
    torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)).backward()
    for block in model.blocks:
        g = block.moe.router.weight.grad
        assert g is not None and g.abs().max() > 0, "router got no gradient: gates do not reach the output"
        for p in (block.v_proj.weight, block.bk_proj.weight, block.bk_scale, block.moe.w1, block.moe.w2):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0


def test_dense_and_sparse_moe_agree():
    sparse = _build("resnet-bk", moe_impl="sparse", seed=3)
    dense = _build("resnet-bk", moe_impl="dense", seed=3)
    dense.load_state_dict(sparse.state_dict())
    ids = torch.randint(0, VOCAB, (3, 50))
    with torch.no_grad():
        torch.testing.assert_close(dense(ids), sparse(ids), atol=1e-5, rtol=1e-5)


def _future_change(name: str, t: int = 20) -> tuple[float, float]:
    """Max |Δ logits| at positions <= t, and at exactly t, when every token after t is changed."""
    model = _build(name).eval()
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 48))
    ids2 = ids.clone()
    ids2[:, t + 1:] = (ids2[:, t + 1:] + 1 + torch.randint(0, VOCAB - 1, ids2[:, t + 1:].shape)) % VOCAB
    assert (ids2[:, t + 1:] != ids[:, t + 1:]).all()
    with torch.no_grad():
        a, b = model(ids), model(ids2)
    return (a[:, : t + 1] - b[:, : t + 1]).abs().max().item(), (a[:, t] - b[:, t]).abs().max().item()


def test_causal_variant_ignores_future_tokens():
    past, _ = _future_change("resnet-bk")
    assert past <= 1e-5


def test_bidirectional_variant_sees_future_tokens():
    _, at_t = _future_change("resnet-bk-bidir")
    assert at_t > 1e-4  # the leak the reference has: G_ii depends on v_{i+1}


@pytest.mark.parametrize("name", NAMES)
def test_few_steps_reduce_loss(name):
    model = _build(name)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(2)
    ids = torch.randint(0, VOCAB, (4, 33))
    x, y = ids[:, :-1], ids[:, 1:]
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        for p in model.parameters():
            assert p.grad is None or torch.isfinite(p.grad).all()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.1, losses
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name,mode", [("resnet-bk", "causal"), ("resnet-bk-bidir", "bidirectional")])
def test_model_calls_the_fused_bk_core(name, mode, monkeypatch):
    # The model resolves the package's ``bk_core`` (not the slow ``bk_core_reference``) at call time.
    assert resnet_bk.bk_core is bk_pkg.bk_core and resnet_bk.bk_core is not bk_pkg.bk_core_reference
    calls = []
    real = bk_pkg.bk_core

    def spy(v, **kw):
        calls.append((tuple(v.shape), kw))
        return real(v, **kw)

    monkeypatch.setattr(resnet_bk, "bk_core", spy)
    model = _build(name)
    with torch.no_grad():
        model(torch.randint(0, VOCAB, (2, 9)))
    assert len(calls) == resnet_bk.PRESETS["smoke"]["n_layer"]
    assert all(shape == (2, 9) and kw == {"z": 1j, "h0": -2.0, "coupling": 1.0, "mode": mode} for shape, kw in calls)


def test_fused_op_runs_and_reference_does_not(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the slow bk_core_reference ran inside the model")

    monkeypatch.setattr(bk_pkg, "bk_core_reference", boom)
    monkeypatch.setattr("harness.kernels.bk_core.reference.bk_core_reference", boom)
    model = _build("resnet-bk")
    ids = torch.randint(0, VOCAB, (2, 16))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(ids).sum().backward()
    names = {e.name for e in prof.events()}
    assert any("lmbench::bk_core" in n for n in names), sorted(n for n in names if "bk" in n.lower())
