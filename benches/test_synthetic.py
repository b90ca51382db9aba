"""Synthetic memory tasks: model × seed × training length × task (``--memory-tasks``; MQAR, selective copying,
induction heads), each model trained from scratch with one recipe and the budget's small learning-rate sweep;
accuracy on held-out sequences at the training length and longer. Targets: ``fixtures/targets/synthetic.toml``;
protocol and blind spots: docs/synthetic.md.
"""
import pytest

from harness.measure import synthetic


@pytest.mark.synthetic
@pytest.mark.slow
@pytest.mark.axes("model", "seed", "seq_len", task="memory_tasks")
def test_synthetic(cell, bench):
    result, best = synthetic.measure(cell, bench.provision_task)
    bench.finalize(result, best)
