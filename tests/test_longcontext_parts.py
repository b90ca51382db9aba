"""The pieces of the long-context benchmark, checked against independent computations: the training loop's new
paths (loss mask, deadline, out-of-memory, checkpointing, autocast), memory measurement and prediction, the held-out
protocol, spikes and position buckets, the budgets' sweeps and the run-time skips."""
import dataclasses
import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from harness.cells import Cell
from harness.config import BUDGETS, TrainConfig
from harness.measure.longcontext import loss_spikes, position_buckets, training_metrics, window_nll
from harness.provision.memory import (
    PeakMemory,
    enable_checkpointing,
    is_out_of_memory,
    predict_training_memory,
    saved_activation_bytes,
)
from harness.provision.training import TrainResult, train
from tests import toys

CFG = TrainConfig(seq_len=16, batch_size=4, train_tokens=64 * 12, lr=1e-2)
CPU = torch.device("cpu")


def _data(n=4000, v=20, seed=0):
    return np.random.default_rng(seed).integers(0, v, size=n)


# ------------------------------------------------------------------------------------------------ budgets


@pytest.mark.parametrize("name", list(BUDGETS))
def test_every_default_sweep_keeps_tokens_per_step(name):
    """The rule of the sweep: every default length trains on the same tokens per step and has steps to run."""
    b = BUDGETS[name]
    assert b.long_seq_lens and b.long_recipe.tokens_per_step >= max(b.long_seq_lens)
    per_step = {b.long_recipe.at_seq_len(n).tokens_per_step for n in b.long_seq_lens}
    assert per_step == {b.long_recipe.tokens_per_step}
    assert all(b.long_recipe.at_seq_len(n).steps >= 1 for n in b.long_seq_lens)
    assert b.tasks is not None and b.tasks.lrs and b.tasks.eval_factors[0] == 1


def test_full_budget_sweep_reaches_one_million_tokens():
    assert max(BUDGETS["full"].long_seq_lens) == 2**20
    assert BUDGETS["smoke"].long_seq_lens == (256, 1024)
    assert BUDGETS["small"].long_seq_lens == (2048, 8192, 32768)


# --------------------------------------------------------------------------------------------- training loop


def test_loss_mask_scores_only_masked_targets():
    """A batch source with a mask: the loss is the mean cross-entropy over masked targets (computed here again
    from the model's own logits), and an all-true mask gives the plain loss."""
    torch.manual_seed(0)
    x = torch.randint(0, 20, (4, 16))
    y = torch.randint(0, 20, (4, 16))
    mask = torch.zeros(4, 16, dtype=torch.bool)
    mask[:, 5] = mask[:, 11] = True
    model = toys.CausalToy(20)
    ref = nn.functional.cross_entropy(model(x)[mask], y[mask]).item()
    res = train(model, None, dataclasses.replace(CFG, train_tokens=64, lr=0.0), 0, CPU,
                batches=lambda step: (x, y, mask))
    assert res.losses == [pytest.approx(ref, abs=1e-6)]
    torch.manual_seed(0)
    plain = train(toys.CausalToy(20), None, CFG, 0, CPU, batches=lambda s: (x, y, None)).losses
    torch.manual_seed(0)
    full = train(toys.CausalToy(20), None, CFG, 0, CPU,
                 batches=lambda s: (x, y, torch.ones_like(mask))).losses
    np.testing.assert_allclose(full, plain, rtol=1e-6)


def test_deadline_stops_between_steps_and_keeps_the_log():
    res = train(toys.CausalToy(20), _data(), CFG, 0, CPU, deadline=time.monotonic() - 1)
    assert res.stop == "timeout" and res.stop_step == 0 and res.steps == 0 and "out of time" in res.stop_reason

    class Clock:
        calls = 0

    def source(step):
        Clock.calls += 1
        return torch.randint(0, 20, (2, 8)), torch.randint(0, 20, (2, 8)), None

    deadline = time.monotonic() + 0.5
    slow = toys.Sleepy(20)  # 0.2 s per training forward
    res = train(slow, None, dataclasses.replace(CFG, train_tokens=10_000), 0, CPU, batches=source, deadline=deadline)
    assert res.stop == "timeout" and 1 <= res.steps < CFG.steps * 10 and len(res.losses) == res.steps


def test_out_of_memory_in_a_step_is_a_result():
    res = train(toys.NeedsMemory(20), _data(), dataclasses.replace(CFG, seq_len=toys.OOM_FROM, batch_size=1,
                                                                    train_tokens=toys.OOM_FROM * 4), 0, CPU)
    assert res.stop == "oom" and res.stop_step == 0 and res.losses == [] and not res.diverged
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape"):  # other errors are bugs: they propagate
        train(toys.CausalToy(20), None, CFG, 0, CPU,
              batches=lambda s: (_ for _ in ()).throw(RuntimeError("shape mismatch")))


def test_nan_step_is_recorded_as_divergence_at_that_step():
    res = train(toys.NanAtStep(20), _data(), CFG, 0, CPU)
    assert res.diverged and res.stop == "diverged" and res.diverged_step == toys.NAN_STEP == res.stop_step
    assert len(res.losses) == toys.NAN_STEP + 1 and math.isnan(res.losses[-1])
    m = training_metrics(res)
    assert m["nonfinite_losses"] == 1 and m["diverged"] and m["diverged_step"] == toys.NAN_STEP
    assert m["final_loss"] is None and "final_over_first_loss" not in m


def test_checkpointing_gives_the_same_gradients():
    for build in (lambda: toys.Blocks(20), lambda: _tiny_gpt2(20)):
        torch.manual_seed(0)
        a = build()
        b = build()
        b.load_state_dict(a.state_dict())
        how = enable_checkpointing(b)
        assert "blocks" in how or "Hugging Face activation checkpointing" in how
        x = torch.randint(0, 20, (2, 12))
        for m in (a, b):
            m.train()
            m(x).logsumexp(-1).sum().backward()
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(pa.grad, pb.grad, msg=name)
        assert b.state_dict().keys() == a.state_dict().keys()


def _tiny_gpt2(vocab: int) -> nn.Module:
    from harness.models import get_model_spec

    spec = get_model_spec("transformer")
    return spec.build(dataclasses.replace(spec.config(vocab, 16, "smoke"), preset={"d_model": 16, "n_layer": 2,
                                                                                   "n_head": 2}))


def test_recipe_switches_reach_the_loop():
    torch.manual_seed(0)
    res = train(toys.Blocks(20), _data(), dataclasses.replace(CFG, grad_checkpoint=True), 0, CPU)
    assert res.checkpointing and "3 blocks" in res.checkpointing and not res.diverged
    seen = []
    model = toys.CausalToy(20)
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    res = train(model, _data(), dataclasses.replace(CFG, autocast="bf16", train_tokens=64 * 2), 0, CPU)
    assert seen and set(seen) == {torch.bfloat16} and all(math.isfinite(x) for x in res.losses)


# ---------------------------------------------------------------------------------------------------- memory


def test_peak_memory_sees_an_allocation_inside_the_block():
    with PeakMemory("cpu") as peak:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        x += 1
        del x
    r = peak.result()
    assert r["kind"] == "rss" and r["rss_peak_mb"] >= r["rss_start_mb"] + 60
    if r["peak_since"] == "block start":
        with PeakMemory("cpu") as again:  # the high-water mark was reset: a quiet block does not see it
            pass
        assert again.result()["rss_peak_mb"] < r["rss_peak_mb"] - 30


def test_saved_activation_bytes_and_the_fit_extrapolate_exactly():
    """The fit of a + b·L + c·L² from L = 32, 64, 128 predicts the bytes measured at 512 (an independent count),
    finds the L² term of an attention-like model and none in a convolution."""
    torch.manual_seed(0)
    quad, conv = toys.QuadraticToy(20), toys.CausalToy(20)
    for model, quadratic in ((quad, True), (conv, False)):
        pred = predict_training_memory(lambda m=model: m, 20, seq_len=512, batch=3, device="cpu", probe_lens=(32, 64, 128))
        measured = saved_activation_bytes(model, torch.randint(0, 20, (1, 513)))
        a, b, c = pred.per_seq
        assert (a + b * 512 + c * 512**2) == pytest.approx(measured, rel=0.02)
        assert pred.activation_bytes == pytest.approx(3 * measured, rel=0.02)
        assert pred.quadratic is quadratic
        assert pred.static_bytes == 16 * sum(p.numel() for p in model.parameters())


def test_prediction_with_checkpointing_adds_one_recomputed_block_to_what_the_checkpointed_forward_saves():
    """Probed as training runs: with checkpointing the bound is the checkpointed forward's saved bytes plus one
    block's plain activations (held again while it is recomputed), counted here directly at the predicted length."""
    import copy

    torch.manual_seed(0)
    model = toys.Blocks(20, d=32, n=4)
    ids = torch.randint(0, 20, (1, 1025))
    plain_bytes = saved_activation_bytes(model, ids)
    checkpointed = copy.deepcopy(model)
    enable_checkpointing(checkpointed)
    ckpt_bytes = saved_activation_bytes(checkpointed, ids)
    plain = predict_training_memory(lambda: copy.deepcopy(model), 20, seq_len=1024, batch=2, device="cpu")
    ckpt = predict_training_memory(lambda: copy.deepcopy(model), 20, seq_len=1024, batch=2, device="cpu",
                                   checkpoint=True)
    assert ckpt_bytes < plain_bytes
    assert plain.activation_bytes == pytest.approx(2 * plain_bytes, rel=0.02)
    assert ckpt.activation_bytes == pytest.approx(2 * (ckpt_bytes + plain_bytes / 4), rel=0.02)
    assert ckpt.static_bytes == plain.static_bytes and ckpt.activation_bytes < plain.activation_bytes


def test_predicted_memory_skips_a_hopeless_length(tmp_path):
    from harness.options import parse_options
    from harness.session import Session
    from tests.helpers import DATA_DIR

    s = Session(parse_options(models="tests.toys:quadratic_spec,tests.toys:causal_spec", budget="smoke",
                              seq_lens="262144", cache_dir=tmp_path / "c", results_dir=tmp_path / "r",
                              data_dir=DATA_DIR))
    quad, conv = s.cells("longcontext", fixed={"seq_len": "long"})
    reason = s.run_skip_reason(quad)
    assert reason and "predicted ≥" in reason and "L²" in reason and "262,144" in reason
    assert s.run_skip_reason(conv) is None  # linear: 262k tokens of a tiny model fit


# ---------------------------------------------------------------------------------------------- measurement


def test_window_nll_equals_a_plain_cross_entropy_per_window():
    torch.manual_seed(0)
    model = toys.CausalToy(20).eval()
    ids = np.random.default_rng(0).integers(0, 20, size=1000)
    nll = window_nll(model, ids, 64, CPU, batch_size=5)
    assert nll.shape == (999 // 64, 64)
    with torch.no_grad():
        for k in (0, 7, 14):
            seq = torch.as_tensor(ids[k * 64:(k + 1) * 64 + 1])
            ref = nn.functional.cross_entropy(model(seq[None, :-1])[0].double(), seq[1:], reduction="none")
            np.testing.assert_allclose(nll[k], ref.numpy(), rtol=1e-5, atol=1e-6)


def test_spikes_and_position_buckets():
    losses = [3.0] * 30
    losses[25] = 4.6  # > 1.5 × median 3.0
    losses[27] = 4.4  # < 4.5: not a spike
    losses[5] = 9.0  # inside the first window: never counted
    assert loss_spikes(losses) == [25]
    nll = np.tile(np.arange(1, 11, dtype=float), (3, 1))  # position p has NLL p + 1
    assert position_buckets(nll) == {"1": 1.0, "2-3": 2.5, "4-7": 5.5, "8-10": 9.0}


def test_training_metrics_of_a_known_log():
    tr = TrainResult(steps=4, tokens=100, losses=[4.0, 3.0, 2.0, 1.0], grad_norms=[1.0, 2.0, 3.0, 6.0], wall_s=2.0,
                     step_time_s=0.5, peak_memory={"kind": "rss", "rss_peak_mb": 123.0})
    m = training_metrics(tr)
    assert m["first_loss"] == 4.0 and m["final_loss"] == 2.5 and m["final_over_first_loss"] == 0.625
    assert m["grad_norm_mean"] == 3.0 and m["grad_norm_max"] == 6.0 and m["grad_norm_std"] == pytest.approx(np.std([1, 2, 3, 6]))
    assert m["peak_mem_mb"] == 123.0 and m["train_tokens_per_s"] == 50.0 and m["loss_spikes"] == 0


def test_session_cells_resolve_named_lists_and_parameters(tmp_path):
    from harness.options import parse_options
    from harness.session import Session

    s = Session(parse_options(models="transformer", budget="smoke", memory_tasks="mqar,induction-heads",
                              cache_dir=tmp_path))
    long = s.cells("longcontext", ("model", "dataset", "seed"), {"seq_len": "long"})
    assert [c.seq_len for c in long] == [256, 1024] and all(c.tokenizer == "byte" for c in long)
    tasks = s.cells("synthetic", ("model", "seed", "seq_len"), {"task": "memory_tasks"})
    assert [dict(c.params)["task"] for c in tasks] == ["mqar", "induction-heads"]
    assert all(c.tokenizer is None and c.dataset is None for c in tasks)
    assert tasks[0].cell_id == "synthetic|model=transformer|seed=0|budget=smoke|seq_len=128|bits=fp32|device=cpu|task=mqar"
    with pytest.raises(ValueError, match="named value list"):
        s.cells("x", ("model",), {"seq_len": "longest"})
    assert Cell(benchmark="b", seed=0, params=(("task", "mqar"),)).label(["seed", "task"]) == "s0-mqar"
