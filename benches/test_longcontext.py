"""Long-context benchmark: model × dataset × seed × training length (the budget's sweep, or ``--seq-lens``).

``test_stability`` trains each (model, length, seed) with the long-context recipe (the same tokens per step at every
length) and records the training facts; ``test_extrapolation`` evaluates the same trained model at 2L, 4L, 8L and by
position bucket. An earlier out-of-memory at a shorter length, or a predicted memory beyond the device, skips a cell
before it runs. What a divergence, out-of-memory or timeout means is in ``fixtures/targets/longcontext.toml``
(``record_hints``): recorded, not failed — except divergence of a model whose registry entry claims long-context
stability. Runs on CPU; ``--gpu`` selects it for CUDA.
"""
import pytest

from harness.measure import longcontext

pytestmark = [pytest.mark.longcontext, pytest.mark.gpu(optional=True),
              pytest.mark.axes("model", "dataset", "seed", seq_len="long")]


def test_stability(cell, bench):
    bench.skip_if(bench.session.run_skip_reason(cell, longcontext.recipe(cell)))
    bench.finalize(longcontext.stability(bench.provision(cell, train_cfg=longcontext.recipe(cell), stopped_ok=True)))


def test_extrapolation(cell, bench):
    bench.skip_if(bench.session.run_skip_reason(cell, longcontext.recipe(cell)))
    bench.finalize(longcontext.extrapolation(bench.provision(cell, train_cfg=longcontext.recipe(cell),
                                                             stopped_ok=True)))
