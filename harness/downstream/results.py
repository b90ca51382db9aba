"""Per-example results as data, their aggregation into task metrics with intervals, and a jsonl writer.

Why per-example: every downstream number must be traceable to the examples behind it (which context, which
choices, which log-likelihoods, what was predicted, what was gold), and a suspicious accuracy is debugged by
reading those rows, not by re-running.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from harness.downstream.metrics import (
    Interval,
    binary_f1,
    bootstrap_interval,
    target_perplexity,
    token_perplexity,
    wilson_interval,
)

BINARY_METRICS = ("acc", "acc_norm", "acc_bytes", "exact_match")


@dataclass
class ExampleResult:
    """One scored example. For multiple choice, ``loglikelihoods[i]`` belongs to ``choices[i]`` (scored as
    ``target_delimiter + choice``); ``prediction`` is the argmax of the raw log-likelihoods and
    ``prediction_norm`` of the per-character ones. For a single-target log-likelihood task (LAMBADA),
    ``prediction`` is 0 when the target is the greedy continuation and -1 otherwise. For generation,
    ``prediction`` is the generated text and ``gold`` the gold answers. ``scores`` holds this example's value
    of every metric."""

    task: str
    doc_id: int
    context: str
    choices: list[str]
    target_delimiter: str
    loglikelihoods: list[float]
    n_tokens: list[int]
    is_greedy: list[bool]
    prediction: int | str
    prediction_norm: int | None
    gold: int | list[str]
    scores: dict[str, float]
    truncated: bool = False
    boundary_merged: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskResult:
    """A task's metrics, their intervals, the examples behind them and the protocol that produced them."""

    task: str
    metrics: dict[str, float]
    intervals: dict[str, Interval]
    examples: list[ExampleResult]
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.examples)

    def summary(self) -> dict[str, Any]:
        """Everything but the examples (what goes into a benchmark record)."""
        return {"task": self.task, "n": self.n, "metrics": dict(self.metrics),
                "intervals": {k: v.as_dict() for k, v in self.intervals.items()}, "protocol": dict(self.protocol)}


def aggregate(task: str, examples: Sequence[ExampleResult], metrics: Sequence[str],
              protocol: dict[str, Any] | None = None) -> TaskResult:
    """Task-level metrics from per-example scores.

    0/1 metrics (acc, acc_norm, acc_bytes, exact_match) are means with a Wilson interval. ``f1`` of a
    multiple-choice task is corpus-level binary F1 of choice 1 (MRPC's "yes") with a bootstrap interval; ``f1`` of
    a generation task is the mean SQuAD F1 with a bootstrap interval. ``perplexity`` is lm-eval's per-target
    perplexity; ``token_perplexity`` is reported beside it.
    """
    out: dict[str, float] = {}
    intervals: dict[str, Interval] = {}
    n = len(examples)
    if n == 0:
        raise ValueError(f"{task}: no examples to aggregate")
    for m in metrics:
        if m in BINARY_METRICS:
            k = int(round(sum(e.scores[m] for e in examples)))
            iv = wilson_interval(k, n)
            out[m], intervals[m] = iv.value, iv
        elif m == "f1" and isinstance(examples[0].gold, int):
            rows = np.asarray([[e.gold, e.prediction] for e in examples], dtype=np.float64)
            iv = bootstrap_interval(rows, lambda r: binary_f1(r[:, 0].tolist(), r[:, 1].tolist()))
            out[m], intervals[m] = iv.value, iv
        elif m == "f1":
            iv = bootstrap_interval([e.scores["f1"] for e in examples])
            out[m], intervals[m] = iv.value, iv
        elif m == "perplexity":
            lls = [e.loglikelihoods[0] for e in examples]
            out["perplexity"] = target_perplexity(lls)
            out["token_perplexity"] = token_perplexity(lls, [e.n_tokens[0] for e in examples])
        else:
            raise ValueError(f"{task}: unknown metric {m!r}")
    proto = dict(protocol or {})
    proto["n_truncated"] = sum(e.truncated for e in examples)
    proto["n_boundary_merged"] = sum(e.boundary_merged for e in examples)
    return TaskResult(task, out, intervals, list(examples), proto)


@dataclass(frozen=True)
class GroupResult:
    """A group's metric averaged two ways: ``micro`` over all questions (lm-eval's MMLU number) and ``macro``
    over tasks (each subject counts once)."""

    group: str
    metric: str
    micro: float
    macro: float
    interval: Interval
    n: int
    per_task: dict[str, float]


def aggregate_group(group: str, results: Sequence[TaskResult], metric: str = "acc") -> GroupResult:
    n = sum(r.n for r in results)
    k = int(round(sum(r.metrics[metric] * r.n for r in results)))
    iv = wilson_interval(k, n)
    per = {r.task: r.metrics[metric] for r in results}
    return GroupResult(group, metric, iv.value, float(np.mean(list(per.values()))), iv, n, per)


def write_jsonl(examples: Iterable[ExampleResult], path: str | Path) -> Path:
    """One JSON object per example (UTF-8, keys as in ``ExampleResult``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e.to_json(), ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[ExampleResult]:
    with open(path, encoding="utf-8") as f:
        return [ExampleResult(**json.loads(line)) for line in f if line.strip()]
