"""Controls for downstream numbers: a synthetic multiple-choice task a tiny model learns in a few hundred steps,
a synthetic classification set for the fine-tuning protocol, and label shuffling.

Why: a benchmark that reports "accuracy 0.31" for a tiny model cannot tell a weak model from a broken pipeline.
Two checks can: (1) a model *trained on an easy task* must score far above chance through the very same scorer
(else the scorer, not the model, is at fault), and (2) the same predictions against *shuffled* gold labels must
score at chance (else something leaks the label, e.g. a position bias that matches the label order).
"""
from __future__ import annotations

import string
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from harness.downstream.tasks import Example


@dataclass(frozen=True)
class SyntheticChoiceTask:
    """A random bijection over an alphabet, written as training text ``"k>v\\n"`` lines; each example asks for
    the value of a key: context ``"k>"``, ``n_choices`` distinct candidate values, one of them right."""

    train_text: str
    examples: list[Example]
    mapping: dict[str, str]
    n_choices: int

    @property
    def chance(self) -> float:
        return 1.0 / self.n_choices


def synthetic_choice_task(n_examples: int = 200, n_choices: int = 4, seed: int = 0, n_train_lines: int = 5000,
                          alphabet: str = string.ascii_lowercase) -> SyntheticChoiceTask:
    """The task (module doc). The gold position is uniform over the choices, so a position-biased scorer cannot
    look good. No target delimiter: the value follows ``>`` directly, as in the training text."""
    if not 2 <= n_choices <= len(alphabet):
        raise ValueError(f"need 2 <= n_choices <= {len(alphabet)}")
    rng = np.random.default_rng(seed)
    letters = list(alphabet)
    values = list(rng.permutation(letters))
    mapping = dict(zip(letters, values))
    keys = rng.choice(letters, size=n_train_lines)
    train_text = "".join(f"{k}>{mapping[k]}\n" for k in keys)
    examples = []
    for i in range(n_examples):
        k = letters[int(rng.integers(len(letters)))]
        wrong = [v for v in values if v != mapping[k]]
        distract = list(rng.choice(wrong, size=n_choices - 1, replace=False))
        gold = int(rng.integers(n_choices))
        choices = distract[:gold] + [mapping[k]] + distract[gold:]
        examples.append(Example("synthetic_choice", i, f"{k}>", tuple(choices), "", gold))
    return SyntheticChoiceTask(train_text, examples, mapping, n_choices)


def shuffle_labels(examples: Sequence[Example], seed: int = 0) -> list[Example]:
    """The same examples with their gold indices permuted across examples (a seeded permutation, so the label
    distribution is unchanged). Every example must have the same number of choices."""
    sizes = {len(e.choices) for e in examples}
    if len(sizes) != 1:
        raise ValueError(f"shuffle_labels needs one choice count, got {sorted(sizes)}")
    golds = np.asarray([int(e.gold) for e in examples])  # type: ignore[arg-type]
    perm = np.random.default_rng(seed).permutation(len(golds))
    return [replace(e, gold=int(g)) for e, g in zip(examples, golds[perm])]


def shuffle_class_labels(labels: Sequence[int], seed: int = 0) -> list[int]:
    """Class labels permuted by a seeded permutation (the fine-tuning control)."""
    arr = np.asarray(labels)
    return arr[np.random.default_rng(seed).permutation(len(arr))].tolist()


def synthetic_classification(n: int = 200, seed: int = 0, min_len: int = 4, max_len: int = 40,
                             alphabet: str = string.ascii_lowercase) -> tuple[list[str], list[int]]:
    """Random letter strings of varied length; label 1 iff the *last* letter is in the first half of the
    alphabet. Learnable from the final hidden state of the last token, and only from that position: a classifier
    reading a padding position or the first token scores at chance, which is what this set is for."""
    rng = np.random.default_rng(seed)
    first_half = set(alphabet[: len(alphabet) // 2])
    texts, labels = [], []
    for _ in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        s = "".join(rng.choice(list(alphabet), size=length))
        texts.append(s)
        labels.append(int(s[-1] in first_half))
    return texts, labels
