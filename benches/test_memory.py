"""Memory benchmark: peak memory of one training step (with and without gradient checkpointing) and of inference
at every length of the budget's sweep, and the fitted log-log slope of memory against length.

CPU: peak resident memory in a fresh subprocess per model; CUDA (``--gpu``): ``torch.cuda.max_memory_allocated``
and ``max_memory_reserved`` after a reset. Targets: ``fixtures/targets/memory.toml``; protocol and numbers:
docs/memory.md.
"""
import pytest

from harness.measure import memory


def _memory(cell, bench, lmbench):
    fm = bench.fresh(cell)
    sweep = memory.memory_sweep(cell.budget, cell.device, lmbench.seq_lens)
    bench.finalize(memory.measure(fm, sweep, out_dir=lmbench.results_dir / "plots"))


@pytest.mark.memory
@pytest.mark.axes("model", "dataset", "seed")
def test_memory(cell, bench, lmbench):
    _memory(cell, bench, lmbench)


@pytest.mark.memory
@pytest.mark.gpu
@pytest.mark.axes("model", "dataset", "seed")
def test_memory_gpu(cell, bench, lmbench):
    """The same on CUDA: max allocated and max reserved per step, lengths 512 ... 8k."""
    _memory(cell, bench, lmbench)
