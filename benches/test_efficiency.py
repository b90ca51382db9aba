"""Efficiency benchmark: validation perplexity against training FLOPs during the shared training loop, FLOPs and
wall time to a stated target perplexity (MLPerf style), perplexity at fixed FLOP budgets, the Pareto frontier.

The run evaluates every k steps through the loop's callback and is cached under its own weights key (a
``variant``), so the perplexity benchmark's cached weights stay valid. Targets: ``fixtures/targets/efficiency.toml``
(the run must still learn); everything else is recorded. Protocol and numbers: docs/efficiency.md.
"""
import pytest

from harness.measure import efficiency


@pytest.mark.efficiency
def test_efficiency(cell, bench, lmbench, lmbench_session):
    plan = efficiency.PLANS[cell.budget]
    tcfg = lmbench_session.provisioner.train_config(cell)
    ids = lmbench_session.data.ids(cell.dataset, "valid", cell.tokenizer)[: plan.eval_tokens]
    callback = efficiency.EvalCallback(ids, tcfg.seq_len, plan.every(tcfg.steps), tcfg.steps)
    pm = bench.provision(cell, callback=callback, variant=plan.variant(tcfg.steps))
    bench.finalize(efficiency.measure(pm, plan, out_dir=lmbench.results_dir / "plots"))
