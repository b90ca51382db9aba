"""The synthetic Markov source: exact entropy rate, sampling, and the embedded synthetic-markov corpus.

Tolerances: the plug-in conditional entropy of N symbols has a downward bias of about
(#cells - #contexts) / (2 N ln 2) bits (3e-4 bits for order 2, V = 8, N = 1M) and a standard deviation of
order 1e-3 bits, so |estimate - exact| < 0.02 bits at N = 1M (order 1 and 2, V = 8) leaves a wide margin.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import harness.data.synthetic as syn
from harness.data import ALPHABET, ByteTokenizer, MarkovSource, empirical_conditional_entropy_bits, synthetic_corpus


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), alpha=st.floats(0.1, 3.0), order=st.sampled_from([1, 2]))
def test_plugin_entropy_converges_to_exact_rate(seed, alpha, order):
    src = MarkovSource(order=order, vocab=8, alpha=alpha, seed=seed)
    x = src.sample(1_000_000, np.random.default_rng(seed + 1))
    assert len(x) == 1_000_000 and x.min() >= 0 and x.max() < 8
    est = empirical_conditional_entropy_bits(x, order, 8)
    assert abs(est - src.entropy_rate_bits()) < 0.02


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), vocab=st.integers(2, 12), order=st.integers(0, 3))
def test_stationary_distribution_is_stationary(seed, vocab, order):
    src = MarkovSource(order=order, vocab=vocab, alpha=0.5, seed=seed)
    pi = src.stationary
    assert pi.shape == (vocab**order,) and pi.min() >= 0 and pi.sum() == pytest.approx(1.0)
    if order:
        n = vocab**order
        nxt = (np.arange(n)[:, None] * vocab + np.arange(vocab)[None, :]) % n
        step = np.bincount(nxt.ravel(), weights=(pi[:, None] * src.transitions).ravel(), minlength=n)
        np.testing.assert_allclose(step, pi, atol=1e-12)
    assert 0.0 <= src.entropy_rate_bits() <= math.log2(vocab) + 1e-12


def test_uniform_and_deterministic_chains_exact():
    for v, k in ((8, 1), (32, 1), (5, 2), (32, 2)):
        uni = MarkovSource.from_transitions(np.full((v**k, v), 1.0 / v), order=k)
        assert uni.entropy_rate_bits() == pytest.approx(math.log2(v), abs=1e-12)
        assert uni.floor_ppl() == pytest.approx(v, rel=1e-12)
    # deterministic: each context has one successor (a cycle, and a chain with two absorbing states)
    cycle = np.eye(6)[(np.arange(6) + 1) % 6]
    assert MarkovSource.from_transitions(cycle).entropy_rate_bits() == 0.0
    two_sinks = np.eye(4)[[0, 0, 3, 3]]
    assert MarkovSource.from_transitions(two_sinks).entropy_rate_bits() == 0.0
    det2 = np.eye(3)[np.arange(9) % 3]
    src = MarkovSource.from_transitions(det2, order=2)
    assert src.entropy_rate_bits() == 0.0
    x = src.sample(5_000, 0)
    assert empirical_conditional_entropy_bits(x, 2, 3) == 0.0


def test_order2_v32_dense_and_power_iteration_agree(monkeypatch):
    dense = MarkovSource(order=2, vocab=32, alpha=0.2, seed=7)
    h = dense.entropy_rate_bits()
    monkeypatch.setattr(syn, "_DENSE_MAX_STATES", 1)
    power = MarkovSource(order=2, vocab=32, alpha=0.2, seed=7)
    np.testing.assert_allclose(power.stationary, dense.stationary, atol=1e-12)
    assert power.entropy_rate_bits() == pytest.approx(h, abs=1e-10)
    x = dense.sample(1_000_000, 3)
    assert abs(empirical_conditional_entropy_bits(x, 2, 32) - h) < 0.05  # 32,768 cells: bias ~0.02 bits


def test_sampling_is_seeded_and_starts_stationary():
    src = MarkovSource(order=1, vocab=8, alpha=0.3, seed=11)
    a, b = src.sample(50_000, 5), src.sample(50_000, 5)
    assert np.array_equal(a, b) and not np.array_equal(a, src.sample(50_000, 6))
    unigram = src.stationary @ src.transitions
    freq = np.bincount(src.sample(400_000, 1), minlength=8) / 400_000
    np.testing.assert_allclose(freq, unigram, atol=0.01)
    # zero-probability transitions never occur
    p = np.full((4, 4), 0.5)
    p[:, 2:] = 0.0
    x = MarkovSource.from_transitions(p).sample(10_000, 0)
    assert set(np.unique(x[1:]).tolist()) <= {0, 1}


def test_synthetic_corpus_definition():
    syn._synthetic_splits.cache_clear()
    c = synthetic_corpus()
    assert {s: len(t) for s, t in c.splits.items()} == {"train": 2_000_000, "valid": 100_000, "test": 100_000}
    assert len(set(c.splits["train"])) == 32 and set(c.splits["test"]) <= set(ALPHABET[:32])
    src = MarkovSource(order=1, vocab=32, alpha=0.2, seed=syn.DATASET_SEED)
    assert c.entropy_rate_bits == src.entropy_rate_bits() and 0 < c.entropy_rate_bits < 5
    # the floor is the exponentiated entropy rate, checked against the empirical conditional entropy below
    assert math.log2(c.meta["floor_ppl"]) == pytest.approx(c.entropy_rate_bits, abs=1e-12)
    symbols = np.frombuffer(c.splits["train"].encode(), np.uint8)
    unigram = np.bincount(symbols, minlength=128)[np.bincount(symbols, minlength=128) > 0] / len(symbols)
    assert c.meta["unigram_entropy_bits"] == pytest.approx(-(unigram * np.log2(unigram)).sum(), abs=0.01)
    assert c.meta["unigram_entropy_bits"] > c.entropy_rate_bits
    ids = ByteTokenizer().encode(c.splits["test"])  # one byte token per symbol
    assert len(ids) == 100_000 and c.n_bytes("test") == 100_000
    # deterministic (independent of any benchmark seed) and the splits are distinct streams
    syn._synthetic_splits.cache_clear()
    again = synthetic_corpus()
    assert again.splits == c.splits and c.splits["valid"] != c.splits["test"]
    est = empirical_conditional_entropy_bits(np.frombuffer(c.splits["train"].encode(), np.uint8), 1, 128)
    assert abs(est - c.entropy_rate_bits) < 0.01
