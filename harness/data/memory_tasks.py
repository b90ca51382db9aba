"""Synthetic memory tasks: seeded generators of token sequences with the answer positions to score.

Why here and not as corpora: these tasks are not text. Each has its own small vocabulary (independent of
``--tokenizer``), and only some positions of a sequence have a determined answer; the rest are noise a model cannot
predict and must not be scored on. A task produces ``TaskBatch(ids, mask)``: ``ids`` (n, L + 1) int64 token
sequences and ``mask`` (n, L) bool marking the *targets* ``ids[:, 1:]`` that are answers. A model reads
``ids[:, :-1]`` and is trained (loss) and scored (accuracy) only where ``mask`` is true.

The three tasks (names in the ``TASKS`` registry; parameters in the name, e.g. ``mqar-v128-p16``):

* ``mqar`` — multi-query associative recall (Arora et al. 2023, "Zoology", §3): ``P`` key-value pairs
  ``k1 v1 … kP vP`` open the sequence; then every key is asked once, at a random place of the rest of the sequence,
  as ``k v`` with filler ``0`` between queries. Answer: the value following each queried key (P answers). Keys and
  values are disjoint halves of the vocabulary (``V`` = 64 by default: 1 filler, 31 keys, 32 values), keys distinct.
* ``selective-copy`` — selective copying (Gu & Dao 2023, "Mamba", §4.1.1): ``N`` data tokens at random, sorted
  positions among noise tokens, then a copy marker, then the ``N`` data tokens again in order. Answers: the token
  after the marker and each next one (teacher-forced, as a causal LM reads it). Vocabulary: noise, marker and
  ``V`` = 16 data tokens.
* ``induction-heads`` — induction heads (Olsson et al. 2022; the Mamba paper's §4.1.2 form): random tokens from
  ``V`` = 16 symbols; a special trigger token appears once at a random place followed by a random answer token, and
  again as the last input token. Answer: the token that followed the trigger the first time (one per sequence).

Every sequence is a pure function of (task, length, seed words): ``rng = numpy.random.default_rng(words)``. Training
draws step ``s`` of seed ``k`` from ``(TRAIN_STREAM, k, s)``; held-out sets draw from ``(VALID_STREAM or
TEST_STREAM, L)`` — the same held-out sequences for every model and seed, never seen in training.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from harness.registry import Registry

TRAIN_STREAM, VALID_STREAM, TEST_STREAM = 7_101, 7_102, 7_103


@dataclass(frozen=True)
class TaskBatch:
    ids: np.ndarray  # (n, L + 1) int64
    mask: np.ndarray  # (n, L) bool: targets ids[:, 1:] that are answers

    @property
    def inputs(self) -> np.ndarray:
        return self.ids[:, :-1]

    @property
    def targets(self) -> np.ndarray:
        return self.ids[:, 1:]


@runtime_checkable
class MemoryTask(Protocol):
    name: str

    @property
    def vocab_size(self) -> int: ...

    @property
    def n_choices(self) -> int:
        """How many tokens an answer is drawn from (accuracy by guessing = 1 / n_choices)."""
        ...

    def min_len(self) -> int:
        """The shortest sequence length (inputs) the task can be laid out in."""
        ...

    def sample(self, rng: np.random.Generator, n: int, seq_len: int) -> TaskBatch: ...

    def answers_recoverable(self, ids: np.ndarray, mask: np.ndarray) -> bool:
        """An independent check that every scored answer is determined by the tokens before it."""
        ...

    def config(self) -> dict[str, Any]: ...


def _check_len(task: MemoryTask, seq_len: int) -> None:
    if seq_len < task.min_len():
        raise ValueError(f"task {task.name} needs sequences of at least {task.min_len()} tokens, got {seq_len}: "
                         f"use a longer --seq-lens or fewer pairs/tokens in the task name")


def _random_slots(rng: np.random.Generator, n: int, n_slots: int, k: int) -> np.ndarray:
    """(n, k) sorted distinct slot indices in [0, n_slots) per row."""
    return np.sort(np.argsort(rng.random((n, n_slots)), axis=1)[:, :k], axis=1)


@dataclass(frozen=True)
class MQAR:
    """Multi-query associative recall; see the module docstring. Token 0 is filler."""

    vocab: int = 64
    pairs: int = 8
    name: str = "mqar"

    def __post_init__(self) -> None:
        if self.pairs < 1 or self.n_keys < self.pairs or self.n_choices < 1:
            raise ValueError(f"mqar needs 1 <= pairs <= keys: vocab {self.vocab} has {self.n_keys} keys, "
                             f"pairs {self.pairs}")

    @property
    def n_keys(self) -> int:
        return (self.vocab - 1) // 2

    @property
    def vocab_size(self) -> int:
        return self.vocab

    @property
    def n_choices(self) -> int:
        return self.vocab - 1 - self.n_keys

    def min_len(self) -> int:
        return 4 * self.pairs  # context (2P) + queries (2P), L + 1 tokens with the last target

    def sample(self, rng: np.random.Generator, n: int, seq_len: int) -> TaskBatch:
        _check_len(self, seq_len)
        p, total = self.pairs, seq_len + 1
        keys = 1 + np.argsort(rng.random((n, self.n_keys)), axis=1)[:, :p]  # distinct keys per row
        values = 1 + self.n_keys + rng.integers(0, self.n_choices, size=(n, p))
        ids = np.zeros((n, total), dtype=np.int64)
        ids[:, 0:2 * p:2], ids[:, 1:2 * p:2] = keys, values
        # Queries: P non-overlapping (key, value) slots in the rest; slot j occupies two positions.
        region = total - 2 * p
        slots = _random_slots(rng, n, region - p, p)  # spacing trick: sorted picks + 2·rank never overlap
        starts = 2 * p + slots + np.arange(p)[None, :]
        order = np.argsort(rng.random((n, p)), axis=1)  # which key each query asks
        rows = np.arange(n)[:, None]
        ids[rows, starts] = keys[rows, order]
        ids[rows, starts + 1] = values[rows, order]
        mask = np.zeros((n, seq_len), dtype=bool)
        mask[rows, starts] = True  # target at index t is ids[t + 1]: the value after the queried key
        return TaskBatch(ids, mask)

    def answers_recoverable(self, ids: np.ndarray, mask: np.ndarray) -> bool:
        p = self.pairs
        for row, m in zip(ids, mask):
            context = {int(row[2 * i]): int(row[2 * i + 1]) for i in range(p)}
            for t in np.flatnonzero(m):
                if t < 2 * p or context.get(int(row[t])) != int(row[t + 1]):
                    return False
        return True

    def config(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SelectiveCopy:
    """Selective copying; token 0 is noise, 1 the copy marker, 2.. the data tokens."""

    vocab: int = 16  # data tokens
    tokens: int = 8
    name: str = "selective-copy"

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.vocab < 2:
            raise ValueError(f"selective-copy needs tokens >= 1 and vocab >= 2, got {self.tokens}, {self.vocab}")

    NOISE, MARK = 0, 1

    @property
    def vocab_size(self) -> int:
        return self.vocab + 2

    @property
    def n_choices(self) -> int:
        return self.vocab

    def min_len(self) -> int:
        return 2 * self.tokens + 1

    def sample(self, rng: np.random.Generator, n: int, seq_len: int) -> TaskBatch:
        _check_len(self, seq_len)
        k, total = self.tokens, seq_len + 1
        region = total - 1 - k
        data = 2 + rng.integers(0, self.vocab, size=(n, k))
        ids = np.full((n, total), self.NOISE, dtype=np.int64)
        rows = np.arange(n)[:, None]
        ids[rows, _random_slots(rng, n, region, k)] = data
        ids[:, region] = self.MARK
        ids[:, region + 1:] = data
        mask = np.zeros((n, seq_len), dtype=bool)
        mask[:, region:region + k] = True  # targets ids[region + 1 ...]: the data tokens in order
        return TaskBatch(ids, mask)

    def answers_recoverable(self, ids: np.ndarray, mask: np.ndarray) -> bool:
        for row, m in zip(ids, mask):
            marks = np.flatnonzero(row == self.MARK)
            if len(marks) != 1:
                return False
            region = row[: marks[0]]
            kept = region[region != self.NOISE]
            answers = row[np.flatnonzero(m) + 1]
            if len(kept) != len(answers) or not np.array_equal(kept, answers):
                return False
        return True

    def config(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InductionHeads:
    """Induction heads as in the Mamba paper; the trigger is the last token id (``vocab``)."""

    vocab: int = 16
    name: str = "induction-heads"

    def __post_init__(self) -> None:
        if self.vocab < 2:
            raise ValueError(f"induction-heads needs vocab >= 2, got {self.vocab}")

    @property
    def trigger(self) -> int:
        return self.vocab

    @property
    def vocab_size(self) -> int:
        return self.vocab + 1

    @property
    def n_choices(self) -> int:
        return self.vocab

    def min_len(self) -> int:
        return 3

    def sample(self, rng: np.random.Generator, n: int, seq_len: int) -> TaskBatch:
        _check_len(self, seq_len)
        ids = rng.integers(0, self.vocab, size=(n, seq_len + 1)).astype(np.int64)
        first = rng.integers(0, seq_len - 2, size=n)  # trigger at first, answer at first + 1 < seq_len - 1
        rows = np.arange(n)
        answer = ids[rows, first + 1]
        ids[rows, first] = self.trigger
        ids[:, seq_len - 1] = self.trigger
        ids[:, seq_len] = answer
        mask = np.zeros((n, seq_len), dtype=bool)
        mask[:, seq_len - 1] = True
        return TaskBatch(ids, mask)

    def answers_recoverable(self, ids: np.ndarray, mask: np.ndarray) -> bool:
        for row, m in zip(ids, mask):
            for t in np.flatnonzero(m):
                seen = np.flatnonzero(row[:t] == self.trigger)
                if row[t] != self.trigger or len(seen) != 1 or row[seen[0] + 1] != row[t + 1]:
                    return False
        return True

    def config(self) -> dict[str, Any]:
        return asdict(self)


TASKS: Registry[MemoryTask] = Registry("task", allow_import_strings=True)
TASKS.add("mqar", MQAR())
TASKS.add("selective-copy", SelectiveCopy())
TASKS.add("induction-heads", InductionHeads())
TASKS.add_pattern("mqar-v<V>-p<P>", lambda V, P: MQAR(vocab=int(V), pairs=int(P), name=f"mqar-v{V}-p{P}"))
TASKS.add_pattern("selective-copy-v<V>-n<N>",
                  lambda V, N: SelectiveCopy(vocab=int(V), tokens=int(N), name=f"selective-copy-v{V}-n{N}"))
TASKS.add_pattern("induction-heads-v<V>", lambda V: InductionHeads(vocab=int(V), name=f"induction-heads-v{V}"))
DEFAULT_TASKS = ("mqar", "selective-copy", "induction-heads")


def get_task(name: str) -> MemoryTask:
    task = TASKS.get(name)
    if not isinstance(task, MemoryTask):
        raise ValueError(f"task {name!r} is not a MemoryTask (needs name, vocab_size, n_choices, min_len, sample, "
                         f"answers_recoverable, config)")
    return task


def task_rng(*words: int) -> np.random.Generator:
    return np.random.default_rng([int(w) for w in words])


def heldout(task: MemoryTask, seq_len: int, n: int, split: str = "test") -> TaskBatch:
    """The held-out sequences of a split at a length: the same for every model and seed."""
    stream = {"valid": VALID_STREAM, "test": TEST_STREAM}[split]
    return task.sample(task_rng(stream, seq_len), n, seq_len)
