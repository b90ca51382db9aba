"""Long-context benchmark: model × dataset × seed × training length (the budget's sweep, or ``--seq-lens``).

``test_stability`` trains each (model, length, seed) with the long-context recipe (the same tokens per step at every
length) and records the training facts; ``test_extrapolation`` evaluates the same trained model at 2L, 4L, 8L and by
position bucket. An earlier out-of-memory at a shorter length, or a predicted memory beyond the device, skips a cell
before it runs. What a divergence, out-of-memory or timeout means is in ``fixtures/targets/longcontext.toml``
(``record_hints``): recorded, not failed — except divergence of a model whose registry entry claims long-context
stability. Runs on CPU; ``--gpu`` selects it for CUDA. Protocol and blind spots: docs/longcontext.md.
"""
import pytest

from harness.measure import longcontext

pytestmark = [pytest.mark.longcontext, pytest.mark.gpu(optional=True), pytest.mark.slow,
              pytest.mark.axes("model", "dataset", "seed", seq_len="long")]


def _provision(cell, bench):
    bench.skip_if(bench.session.run_skip_reason(cell, longcontext.recipe(cell)))
    return bench.provision(cell, eval_cfg=longcontext.eval_config(cell), train_cfg=longcontext.recipe(cell), stopped_ok=True)


def test_stability(cell, bench):
    bench.skip_if(longcontext.untrained_reason(cell))
    bench.finalize(longcontext.stability(_provision(cell, bench)))


def test_extrapolation(cell, bench):
    bench.finalize(longcontext.extrapolation(_provision(cell, bench)))
