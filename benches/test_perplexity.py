"""Perplexity benchmark: model × dataset × seed, trained with the shared loop under the session's budget.

Asserts: training stayed finite, the model does not see future tokens (the causality guard), and the held-out
perplexity meets the target in ``fixtures/targets/perplexity.toml`` for this dataset and budget.
"""
import math

import pytest

from harness.benchmarks.perplexity import measure
from harness.targets import lookup


@pytest.mark.perplexity
def test_perplexity(model_name, dataset_name, seed, workbench, lmbench, targets, bench_record):
    tm = workbench.trained(model_name, dataset_name, seed)
    m = measure(workbench, tm, dataset_name)
    bench_record.seq_len = tm.train_cfg.seq_len
    bench_record.config_hash = tm.config_hash
    bench_record.params = tm.params
    bench_record.train = tm.result.summary()
    bench_record.protocol = m.protocol | {"train": tm.train_cfg.to_dict(), "model_preset": tm.model_cfg.preset}
    bench_record.metrics = m.metrics | {"causality_max_delta": m.causality.max_delta}
    bench_record.leak = m.causality.leak
    bench_record.notes = tm.spec.notes

    if tm.result.diverged:
        bench_record.status = "diverged"
        pytest.fail(f"{model_name} diverged at step {tm.result.diverged_step} (non-finite loss or gradient norm; "
                    f"the loss curve is in the record): try other seeds or a lower lr in harness/config.py")
    if m.causality.leak:
        bench_record.status = "leak"
        if tm.spec.causal:
            pytest.fail(m.causality.message(model_name))
        pytest.xfail(m.causality.message(model_name) + " (declared non-causal: its perplexity is not comparable)")

    metrics, t = m.metrics, targets("perplexity")
    assert math.isfinite(metrics["nll"]), f"non-finite held-out loss {metrics['nll']}"
    budget = lmbench.budget
    bench_record.protocol["targets_version"] = t["version"]
    for key, metric in (("max_ppl_over_floor", "ppl_over_floor"), ("max_ppl_over_unigram", "ppl_over_unigram"),
                        ("max_ppl", "ppl")):
        limit = lookup(t, dataset_name, key, budget)
        if limit is not None and metric in metrics:
            bench_record.protocol.setdefault("targets", {})[metric] = limit
            assert metrics[metric] <= limit, (
                f"{model_name} on {dataset_name}: {metric} = {metrics[metric]:.4g} > target {limit} "
                f"(fixtures/targets/perplexity.toml, budget {budget})"
            )
