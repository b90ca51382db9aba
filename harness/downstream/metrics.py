"""Metrics for downstream tasks: accuracy with an interval, multiple-choice predictions, SQuAD-style F1 / exact
match, binary F1 and perplexity.

Why hand-written: each is a few lines whose exact definition matters for comparability (lm-evaluation-harness'
``acc_norm`` divides by *characters* of the choice; SQuAD's F1 normalises case, punctuation and articles first),
and pulling scikit-learn or the ``evaluate`` package in for them would hide those definitions. The formulas are
the published ones; the tests check them against independent computations (scipy's binomial, brute force).
"""
from __future__ import annotations

import collections
import math
import re
import string
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval at ``level`` (e.g. 0.95), and the method that made it."""

    value: float
    low: float
    high: float
    level: float
    method: str

    def as_dict(self) -> dict[str, float | str]:
        return {"value": self.value, "low": self.low, "high": self.high, "level": self.level, "method": self.method}


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2.0)


def wilson_interval(k: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion k/n.

    Why Wilson and not the normal ("Wald") interval: downstream accuracies of small models sit near chance or near
    0/1 on small sets (COPA has 100 examples), where Wald intervals undercover and can leave [0, 1].
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    z = _z(level)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level, "wilson")


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap over examples (rows resampled with replacement, seeded), for scores Wilson does not
    cover: a mean of non-0/1 scores (SQuAD F1) or a corpus-level statistic such as F1 over (gold, pred) rows."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape[0] == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.shape[0], size=(n_resamples, arr.shape[0]))
    stats = np.array([statistic(arr[i]) for i in idx])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return Interval(float(statistic(arr)), float(lo), float(hi), level, f"percentile bootstrap ({n_resamples})")


# ------------------------------------------------------------------------------------------ multiple choice
@dataclass(frozen=True)
class ChoicePredictions:
    """argmax of the raw log-likelihoods (``acc``), per character of the choice (``acc_norm``, lm-eval's
    definition) and per UTF-8 byte (``acc_bytes``)."""

    pred: int
    pred_norm: int
    pred_bytes: int


def choice_predictions(loglikelihoods: Sequence[float], choices: Sequence[str]) -> ChoicePredictions:
    """Predictions as lm-evaluation-harness makes them: ``choices`` are the answer strings *without* the target
    delimiter, so " yes" and "yes" normalise the same. Ties go to the first choice (numpy argmax)."""
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    chars = np.asarray([float(len(c)) for c in choices])
    nbytes = np.asarray([float(len(c.encode("utf-8"))) for c in choices])
    if len(lls) != len(chars):
        raise ValueError(f"{len(lls)} log-likelihoods for {len(chars)} choices")
    with np.errstate(divide="ignore", invalid="ignore"):
        return ChoicePredictions(int(np.argmax(lls)), int(np.argmax(lls / chars)), int(np.argmax(lls / nbytes)))


def binary_f1(golds: Sequence[int], preds: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC F1). 0.0 when there are no true positives."""
    tp = sum(1 for g, p in zip(golds, preds) if g == positive and p == positive)
    fp = sum(1 for g, p in zip(golds, preds) if g != positive and p == positive)
    fn = sum(1 for g, p in zip(golds, preds) if g == positive and p != positive)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


# ------------------------------------------------------------------------------------------ SQuAD-style
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """The official SQuAD v1.1 normalisation: lower case, drop punctuation and articles, squeeze whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """The official SQuAD v1.1 F1: bag-of-tokens overlap after normalisation, max over the gold answers."""
    best = 0.0
    pred_toks = normalize_answer(prediction).split()
    for g in golds:
        gold_toks = normalize_answer(g).split()
        common = collections.Counter(pred_toks) & collections.Counter(gold_toks)
        same = sum(common.values())
        if same == 0:
            continue
        precision, recall = same / len(pred_toks), same / len(gold_toks)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


# ------------------------------------------------------------------------------------------ perplexity
def target_perplexity(loglikelihoods: Sequence[float]) -> float:
    """lm-eval's LAMBADA ``perplexity``: exp(-mean over examples of the *whole target's* log-likelihood). It is a
    per-target (per-word) figure, so it does not depend on how many tokens the tokenizer cut the word into."""
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    return float(math.exp(-lls.mean()))


def token_perplexity(loglikelihoods: Sequence[float], n_tokens: Sequence[int]) -> float:
    """exp(total NLL / total scored tokens): tokenizer-dependent, shown next to ``target_perplexity``."""
    return float(math.exp(-float(np.sum(loglikelihoods)) / float(np.sum(n_tokens))))
