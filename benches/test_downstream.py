"""Downstream tasks (docs/downstream.md): zero-shot scores, the fine-tuning protocol, and the controls behind them.

Cells are model × training dataset (default WikiText-2) × seed, times the ``--tasks`` (default: every shipped
task; a group such as ``mmlu`` is one cell that scores each of its subjects). How many examples each task scores
depends on the budget (``DownstreamConfig`` in harness/config.py) unless ``--limit N`` says otherwise. Tasks whose
files are absent are skipped with the reason naming them. Targets (``fixtures/targets/downstream.toml``) are about
correctness, not small models' accuracy: scores in range, every metric recounted from the stored per-example rows,
and, on a model trained on an easy synthetic task, accuracy far above chance, chance on shuffled labels, and
agreement with lm-evaluation-harness. Marked ``slow``: each model is trained twice (WikiText-2 and the control
text), minutes per model at the smoke budget on a CPU; ``pytest benches -m "not slow"`` leaves them out.
"""
import pytest

from harness.config import get_budget
from harness.measure import downstream
from harness.measure.downstream_controls import CONTROL_DATASET, measure_controls, measure_lm_eval_agreement

AXES = ("model", "dataset", "seed")


def _cfg(lmbench):
    return get_budget(lmbench.budget).downstream


def _limit(lmbench):
    return lmbench.limit or _cfg(lmbench).limit


@pytest.mark.downstream
@pytest.mark.slow
@pytest.mark.axes(*AXES, default_dataset=["wikitext-2"], options=("limit",))
def test_downstream(cell, downstream_task, provision, bench, lmbench):
    bench.finalize(downstream.measure(provision(cell), downstream_task, results_dir=lmbench.results_dir,
                                      limit=_limit(lmbench)))


@pytest.mark.downstream
@pytest.mark.slow
@pytest.mark.axes(*AXES, default_dataset=["wikitext-2"])
def test_finetune(cell, finetune_task, provision, bench, lmbench):
    """The fine-tuning protocol's size is the budget's (``--limit`` is for zero-shot scoring: k-fold needs more
    examples than folds)."""
    cfg = _cfg(lmbench)
    bench.finalize(downstream.measure_finetune(
        provision(cell), finetune_task, results_dir=lmbench.results_dir, limit=cfg.finetune_limit,
        steps=cfg.finetune_steps, seeds=cfg.finetune_seeds, folds=cfg.finetune_folds))


@pytest.mark.downstream
@pytest.mark.slow
@pytest.mark.axes("model", "seed", dataset=[CONTROL_DATASET])
def test_controls(cell, provision, bench, lmbench):
    bench.finalize(measure_controls(provision(cell), results_dir=lmbench.results_dir,
                                    n_examples=_cfg(lmbench).controls_examples))


@pytest.mark.downstream
@pytest.mark.slow
@pytest.mark.axes("model", "seed", dataset=[CONTROL_DATASET], options=("limit",))
def test_lm_eval_agreement(cell, provision, bench, lmbench):
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'lmbench[lm-eval]'): "
                                          "agreement with lm-evaluation-harness not checked")
    bench.finalize(measure_lm_eval_agreement(provision(cell), results_dir=lmbench.results_dir,
                                             n_examples=_cfg(lmbench).controls_examples, limit=_limit(lmbench)))
