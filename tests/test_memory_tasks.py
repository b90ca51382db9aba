"""The synthetic memory task generators: every scored answer is recoverable from its sequence (checked by
independent solvers written here, not by the tasks' own checks), layouts are exact, and seeds behave."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.data.memory_tasks import (
    MQAR,
    TASKS,
    InductionHeads,
    SelectiveCopy,
    get_task,
    heldout,
    task_rng,
)
from harness.measure.synthetic import majority_baseline


def follow_first_occurrence(row: np.ndarray, t: int) -> int | None:
    """The token after the first earlier occurrence of row[t] (the recall rule for MQAR and induction heads)."""
    earlier = np.flatnonzero(row[:t] == row[t])
    return int(row[earlier[0] + 1]) if len(earlier) else None


def solve(task, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Answers an oracle derives from the inputs alone (ids[:, :-1]): never reads the targets it predicts."""
    out = np.full(mask.shape, -1, dtype=np.int64)
    for i, (row, m) in enumerate(zip(ids[:, :-1], mask)):
        if isinstance(task, SelectiveCopy):
            marker = int(np.flatnonzero(row == task.MARK)[0])
            kept = [int(x) for x in row[:marker] if x != task.NOISE]
            for j, t in enumerate(np.flatnonzero(m)):
                out[i, t] = kept[j]
        else:
            for t in np.flatnonzero(m):
                out[i, t] = follow_first_occurrence(row, t)
    return out


task_params = st.one_of(
    st.builds(lambda v, p, extra: (MQAR(vocab=v, pairs=p), 4 * p + extra),
              st.integers(5, 200), st.integers(1, 2), st.integers(0, 40)),
    st.builds(lambda v, p, extra: (MQAR(vocab=2 * v + 1, pairs=p), 4 * p + extra),
              st.integers(16, 64), st.integers(1, 16), st.integers(0, 64)),
    st.builds(lambda v, k, extra: (SelectiveCopy(vocab=v, tokens=k), 2 * k + 1 + extra),
              st.integers(2, 40), st.integers(1, 16), st.integers(0, 64)),
    st.builds(lambda v, extra: (InductionHeads(vocab=v), 3 + extra), st.integers(2, 40), st.integers(0, 200)),
)


@settings(max_examples=60, deadline=None)
@given(params=task_params, seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6))
def test_every_answer_is_recoverable_from_its_sequence(params, seed, n):
    task, seq_len = params
    b = task.sample(np.random.default_rng(seed), n, seq_len)
    assert b.ids.shape == (n, seq_len + 1) and b.mask.shape == (n, seq_len) and b.ids.dtype == np.int64
    assert b.ids.min() >= 0 and b.ids.max() < task.vocab_size
    per_row = {MQAR: getattr(task, "pairs", 0), SelectiveCopy: getattr(task, "tokens", 0), InductionHeads: 1}
    assert (b.mask.sum(1) == per_row[type(task)]).all()
    np.testing.assert_array_equal(solve(task, b.ids, b.mask)[b.mask], b.targets[b.mask])
    assert task.answers_recoverable(b.ids, b.mask)


def test_a_corrupted_answer_is_caught():
    """The checks can fail: change one answer and neither the oracle nor the task's own check accepts it."""
    for task, seq_len in ((MQAR(), 64), (SelectiveCopy(), 64), (InductionHeads(), 64)):
        b = task.sample(task_rng(1, 2), 4, seq_len)
        t = np.flatnonzero(b.mask[0])[0]
        ids = b.ids.copy()
        ids[0, t + 1] = (ids[0, t + 1] + 1 - 2) % (task.vocab_size - 2) + 2  # another non-special token
        assert not task.answers_recoverable(ids, b.mask)
        assert solve(task, ids, b.mask)[0, t] != ids[0, t + 1]


def test_mqar_layout():
    task = MQAR(vocab=64, pairs=8)
    b = task.sample(task_rng(0), 32, 64)
    keys, values = b.ids[:, 0:16:2], b.ids[:, 1:16:2]
    assert ((keys >= 1) & (keys <= task.n_keys)).all() and (values > task.n_keys).all()
    assert all(len(set(row)) == 8 for row in keys)  # distinct keys: every query has one answer
    queried = np.sort(np.where(b.mask, b.ids[:, :-1], 0), axis=1)[:, -8:]
    np.testing.assert_array_equal(queried, np.sort(keys, axis=1))  # every key is asked exactly once
    assert not b.mask[:, :16].any()  # the context itself is never scored


def test_seeds_streams_and_heldout_sets():
    task = get_task("mqar")
    a, b = task.sample(task_rng(5, 0, 3), 8, 64), task.sample(task_rng(5, 0, 3), 8, 64)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert not np.array_equal(a.ids, task.sample(task_rng(5, 1, 3), 8, 64).ids)
    valid, test = heldout(task, 64, 16, "valid"), heldout(task, 64, 16, "test")
    assert not np.array_equal(valid.ids, test.ids)
    np.testing.assert_array_equal(test.ids, heldout(task, 64, 16, "test").ids)


def test_templated_names_and_errors():
    assert get_task("mqar-v128-p16") == MQAR(vocab=128, pairs=16, name="mqar-v128-p16")
    assert get_task("selective-copy-v8-n4").tokens == 4 and get_task("induction-heads-v32").vocab_size == 33
    with pytest.raises(ValueError, match="at least 32 tokens"):
        MQAR(pairs=8).sample(task_rng(0), 1, 16)
    with pytest.raises(ValueError, match="pairs <= keys"):
        MQAR(vocab=9, pairs=8)
    assert set(TASKS.names_registered()) == {"mqar", "selective-copy", "induction-heads"}


@pytest.mark.parametrize("name", ["mqar", "selective-copy", "induction-heads"])
def test_answers_are_spread_so_guessing_stays_near_chance(name):
    """Always giving the most common held-out answer scores near chance: a model that ignores context cannot pass
    the targets by a skewed answer distribution."""
    task = get_task(name)
    assert majority_baseline(task, 128, 512) < 2.0 / task.n_choices
