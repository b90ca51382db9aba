import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.measure.causality import check_causality
from harness.measure.perplexity import plan_windows, reference_sliding_window_nll, sliding_window_nll, unigram_nll
from harness.models import get_model_spec
from tests.toys import CausalToy, LeakyToy


@pytest.fixture(scope="module")
def tiny_gpt2():
    torch.manual_seed(0)
    spec = get_model_spec("transformer")
    return spec.build(spec.config(40, 32, "smoke")).double().eval()


@pytest.mark.parametrize("window,stride", [(32, 32), (32, 8), (16, 5), (32, 1)])
def test_sliding_window_equals_reference_loop(tiny_gpt2, window, stride):
    ids = np.random.default_rng(1).integers(0, 40, size=203)
    fast = sliding_window_nll(tiny_gpt2, ids, window, stride, batch_size=7)
    ref = reference_sliding_window_nll(tiny_gpt2, ids, window, stride)
    # stride < window: every token after the first is scored once; stride == window (disjoint windows): the
    # first token of each window has no context and is not scored, as in the Hugging Face method.
    expected = len(ids) - 1 if stride < window else len([i for i in range(1, len(ids)) if i % stride])
    assert fast[1] == ref[1] == expected
    assert abs(fast[0] / fast[1] - ref[0] / ref[1]) <= 1e-6


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 300), window=st.integers(2, 64), data=st.data())
def test_windows_score_every_token_once(n, window, data):
    stride = data.draw(st.integers(1, window))
    scored = []
    for w in plan_windows(n, window, stride):
        assert w.end - w.begin <= window
        scored.extend(range(w.score_from, w.end))
    if stride < window:
        assert scored == list(range(1, n))
    else:  # disjoint windows start at multiples of the stride; their first token is never scored
        assert scored == [i for i in range(1, n) if i % stride != 0]


def test_bad_window_is_a_clear_error():
    with pytest.raises(ValueError, match="stride"):
        plan_windows(10, 4, 5)


def test_unigram_floor():
    train = np.array([0, 0, 1, 1])
    assert unigram_nll(train, np.array([0, 1, 0]), 2) == pytest.approx(np.log(2))


def test_guard_passes_causal_models(tiny_gpt2):
    assert not check_causality(tiny_gpt2, 40, seq_len=32).leak
    assert not check_causality(CausalToy(30), 30).leak


def test_guard_catches_leaky_model():
    torch.manual_seed(0)
    res = check_causality(LeakyToy(30), 30)
    assert res.leak and res.max_delta > 1e-3
    msg = res.message("toy")
    assert msg.startswith("model toy leaks future tokens: logits at position")
    assert "changed by" in msg and "under probe 'suffix from" in msg


def test_guard_catches_a_leak_of_one_token_at_the_end():
    """A model that peeks only at the very last token still leaks (every t < T-1 sees a change)."""

    class PeekLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 10)

        def forward(self, ids):
            return self.emb(ids) + 1e-6 * self.emb(ids[:, -1:])

    assert check_causality(PeekLast(), 10).leak


@pytest.mark.parametrize("name,leaks", [("resnet-bk", False), ("resnet-bk-bidir", True)])
def test_guard_on_resnet_bk_variants(name, leaks):
    """The reference-faithful bidirectional BK-Core sees the future; the causal variant must not."""
    torch.manual_seed(0)
    spec = get_model_spec(name)
    res = check_causality(spec.build(spec.config(64, 64, "smoke")), 64)
    assert res.leak is leaks, res.message(name)
    assert spec.causal is not leaks


@pytest.mark.parametrize("n,window,stride", [(100, 32, 32), (100, 32, 8), (100, 7, 7), (5, 4, 1), (64, 64, 64)])
def test_scored_mask_follows_the_protocol(n, window, stride):
    """Independent of the window planner: overlapping windows score every token but the first; disjoint windows
    skip exactly the first token of each window (positions that are multiples of the stride)."""
    from harness.measure.perplexity import scored_mask

    expected = np.array([i > 0 and (stride < window or i % stride != 0) for i in range(n)])
    np.testing.assert_array_equal(scored_mask(n, window, stride), expected)
