"""Throughput benchmarks: tokens/s of training, prefill and decode over sweeps of length and batch; the harness's own
overhead; each architecture's speed against the Transformer's, side by side.

Speed is never asserted in absolute terms. Targets (``fixtures/targets/throughput.toml``) are ratios measured in the
same run: the evaluation path against a bare ``model(x)`` loop (>= 0.9), and a training step no faster than its own
forward pass (a timer that missed work fails). MFU above 1 is refused as ``impossible``. Protocol and numbers:
docs/throughput.md. The ``_gpu`` variants run the same on CUDA under ``--gpu``.
"""
import pytest

from harness.measure import overhead, throughput

OVERHEAD_VOCABS = [256, 50_257]  # the byte tokenizer's and GPT-2's


def _sweep(fm, lmbench):
    return throughput.sweep_for(fm.cell.budget, fm.cell.device, fm.train_cfg.seq_len, fm.train_cfg.tokens_per_step,
                                lmbench.seq_lens)


def _throughput(cell, bench, lmbench):
    fm = bench.fresh(cell)
    bench.finalize(throughput.measure(fm, _sweep(fm, lmbench), out_dir=lmbench.results_dir / "plots"))


def _vs_transformer(cell, bench, lmbench):
    if cell.model == "transformer":
        pytest.skip("transformer is the reference of this comparison")
    fm = bench.fresh(cell)
    ref = bench.session.fresh(cell.replace(model="transformer"))
    bench.finalize(throughput.measure_vs(fm, ref, _sweep(fm, lmbench)))


@pytest.mark.throughput
@pytest.mark.axes("model", "dataset", "seed")
def test_throughput(cell, bench, lmbench):
    _throughput(cell, bench, lmbench)


@pytest.mark.throughput
@pytest.mark.axes("model", "dataset", "seed")
def test_speed_vs_transformer(cell, bench, lmbench):
    """Training and prefill tokens/s over the Transformer's of equal size at every length, the crossover length."""
    _vs_transformer(cell, bench, lmbench)


@pytest.mark.throughput
@pytest.mark.axes("seed", model=["transformer"], dataset=["synthetic-markov"])
@pytest.mark.parametrize("vocab", OVERHEAD_VOCABS)
def test_harness_overhead(cell, vocab, bench):
    """The perplexity evaluation path against a bare model(x) loop and against model(x) + torch's cross-entropy,
    over the same batches (the budget's eval batch and window), at the byte and GPT-2 vocabulary sizes. The path
    is model-agnostic: it is measured on the issue's reference, the Transformer of the budget."""
    fm = bench.fresh(cell)
    batch = bench.session.provisioner.eval_config(cell).batch_size
    bench.finalize(overhead.measure_overhead(fm, vocab, fm.train_cfg.seq_len, batch))


@pytest.mark.throughput
@pytest.mark.gpu
@pytest.mark.axes("model", "dataset", "seed")
def test_throughput_gpu(cell, bench, lmbench):
    """The same sweep on CUDA (the PSANN plan's 65,536 / 131,072 / 262,144 tokens per batch), with MFU."""
    _throughput(cell, bench, lmbench)


@pytest.mark.throughput
@pytest.mark.gpu
@pytest.mark.axes("model", "dataset", "seed")
def test_speed_vs_transformer_gpu(cell, bench, lmbench):
    _vs_transformer(cell, bench, lmbench)
