"""Memory (``harness.measure.memory``): the log-log slope, gradient checkpointing that changes memory and nothing
else, a fresh-subprocess RSS meter that sees a step's extra 32 MiB, and the benchmark run in-process at the micro
budget with its record, plot and report."""
from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.measure import memory
from harness.models import get_model_spec
from harness.results.records import read_records
from tests.helpers import REPO, TOY

MIB = 1024 * 1024


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Probes run in subprocesses that inherit this thread count (``one_thread`` in conftest says why)."""


@settings(max_examples=50, deadline=None)
@given(k=st.floats(0.0, 3.0), c=st.floats(1e3, 1e9),
       xs=st.lists(st.integers(16, 1 << 16), min_size=2, max_size=6, unique=True))
def test_loglog_slope_of_a_power_law_is_its_exponent(k, c, xs):
    assert memory.loglog_slope(xs, [c * x ** k for x in xs]) == pytest.approx(k, abs=1e-6)


def test_loglog_slope_needs_two_positive_points():
    assert memory.loglog_slope([128], [5.0]) is None
    assert memory.loglog_slope([128, 256, 512], [0.0, 5.0, -1.0]) is None  # zeros (nothing measured) are dropped


def _model(name: str, seq_len: int = 64):
    spec = get_model_spec(name)
    torch.manual_seed(0)
    return spec.build(spec.config(64, seq_len, "smoke"))


def _saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor, list[torch.Tensor]]:
    """Bytes of the tensors autograd keeps for the backward pass (the activations checkpointing drops), the loss,
    and the gradients."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).float().logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return total, loss.detach(), grads


@pytest.mark.parametrize("name", ["transformer", "llama", "mamba", "resnet-bk"])
def test_checkpointing_keeps_values_and_gradients_and_saves_less(name):
    """The checkpointed copy computes the same loss and gradients (recomputation is exact in eval-free blocks: no
    dropout at these presets) while autograd keeps less for the backward; the original model is not changed."""
    plain = _model(name)
    blocks_name, blocks = memory.find_blocks(plain)
    ckpt = memory.with_checkpointing(plain)
    assert all(not isinstance(b, memory.Checkpointed) for b in blocks)  # a copy was wrapped, not the original
    assert all(isinstance(b, memory.Checkpointed) for b in memory.find_blocks(ckpt)[1])
    x = torch.randint(0, 64, (2, 64), generator=torch.Generator().manual_seed(1))
    saved_plain, loss_plain, g_plain = _saved_bytes(plain, x)
    saved_ckpt, loss_ckpt, g_ckpt = _saved_bytes(ckpt, x)
    assert torch.allclose(loss_plain, loss_ckpt, rtol=1e-6, atol=1e-7)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g_plain, g_ckpt))
    assert saved_ckpt < 0.8 * saved_plain, (blocks_name, saved_ckpt, saved_plain)


def test_a_model_without_blocks_is_said_to_have_none():
    from tests.toys import CausalToy

    assert not memory.has_blocks(CausalToy(16))
    with pytest.raises(ValueError, match="no nn.ModuleList of blocks"):
        memory.find_blocks(CausalToy(16))


def _probe(model: str) -> dict[tuple[int, str], memory.ProbeRow]:
    from harness.config import get_budget

    spec = memory.ProbeSpec(model=model, preset="smoke", vocab_size=32, seed=0, lengths=[32, 64], batch=2,
                            train=get_budget("micro").train.to_dict())
    return {(r.seq_len, r.mode): r for r in memory.probe_in_subprocess(spec, timeout=300)}


def test_fresh_subprocess_rss_sees_a_step_that_needs_32_mib_more():
    """The same toy with and without a 32 MiB buffer written in its forward, each probed in its own fresh
    process: the peak above the resident baseline differs by the buffer (less a little: the baseline itself is
    measured after a warm-up step), in training and in inference, at every length."""
    from tests.toys import BloatedToy

    plain, bloated = _probe(TOY), _probe("tests.toys:bloated_spec")
    assert set(plain) == set(bloated) == {(n, m) for n in (32, 64) for m in ("train", "infer")}  # no blocks: no ckpt
    for key, row in bloated.items():
        assert row.error is None and row.base_bytes > 10 * MIB  # a Python process with torch loaded
        extra = row.peak_bytes - plain[key].peak_bytes
        assert 0.9 * BloatedToy.bloat_bytes < extra < 1.5 * BloatedToy.bloat_bytes, (key, extra / MIB)


def test_probe_failures_are_one_line():
    from harness.config import get_budget

    spec = memory.ProbeSpec(model="tests.toys:no_such_spec", preset="smoke", vocab_size=32, seed=0, lengths=[32],
                            batch=1, train=get_budget("micro").train.to_dict())
    with pytest.raises(RuntimeError, match=r"memory probe subprocess failed \(exit 1\): .*no_such_spec"):
        memory.probe_in_subprocess(spec, timeout=120)


def test_memory_benchmark_in_process_at_micro(inproc):
    """`pytest benches -m memory` at the micro budget on the Transformer: the record names its method (fresh
    subprocess RSS), has the peak of a plain and a checkpointed training step and of inference at each length, the
    fitted slopes, checkpointed/plain below 1, a log-log plot, and memory.md; the CUDA variant is skipped here."""
    result = inproc.runpytest(str(REPO / "benches" / "test_memory.py"), "-m", "memory", "--models", "transformer",
                              "--budget", "micro", "--results-dir", str(inproc.results), "-rs")
    recs = {r["cell_id"].split("|")[0]: r for r in read_records(inproc.results / "records.jsonl")}
    rec = recs["memory"]
    assert rec["status"] == "passed", rec.get("reason")
    m, p = rec["metrics"], rec["protocol"]
    assert p["method"] == memory.CPU_METHOD and "fresh subprocess" in p["method"]
    lengths = p["lengths"]
    for n in lengths:
        for mode in ("train", "train_ckpt", "infer"):
            assert m[f"L{n}_{mode}_peak_mb"] > 0
    assert 0 < m["ckpt_over_plain"] < 1 and m["train_ckpt_peak_mb"] < m["train_peak_mb"]
    assert all(math.isfinite(m[f"{mode}_memory_slope"]) for mode in ("train", "train_ckpt", "infer"))
    assert set(p["targets"]) == {"train_memory_slope", "ckpt_over_plain"}
    assert os.path.getsize(rec["artefacts"]["memory_plot"]) > 5000
    assert recs["memory/memory_gpu"]["status"] == "skipped"
    assert "Peak memory per step" in (inproc.results / "memory.md").read_text()
    result.assert_outcomes(passed=1, skipped=1)
