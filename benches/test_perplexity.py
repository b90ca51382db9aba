"""Perplexity benchmark: model × dataset × seed × seq_len, trained with the shared loop under the session's budget.

The measurement guards causality first and scores held-out perplexity; the finaliser checks training stayed finite,
no leak, and every target of ``fixtures/targets/perplexity.toml`` that applies to the cell.
"""
import pytest

from harness.measure import perplexity


@pytest.mark.perplexity
def test_perplexity(cell, provision, bench):
    bench.finalize(perplexity.measure(provision(cell)))
