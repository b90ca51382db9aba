"""Run a task's examples through the scorer and aggregate: the lmbench side of every downstream number.

    from harness.downstream import evaluate_task, get_task
    result = evaluate_task(model, tokenizer, get_task("piqa"), ctx, max_len=128, limit=200)
    result.metrics            # {"acc": ..., "acc_norm": ...}
    result.intervals["acc"]   # Wilson 95% interval
    write_jsonl(result.examples, "piqa.jsonl")
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from harness.data.base import DataContext, Tokenizer
from harness.downstream.encoding import EncodedPair, default_prefix_token_id, encode_pair
from harness.downstream.metrics import choice_predictions, exact_match, token_f1
from harness.downstream.results import ExampleResult, TaskResult, aggregate
from harness.downstream.scorer import generation_context_ids, greedy_generate, score_token_pairs
from harness.downstream.tasks import Example, Generation, TaskSpec, build_examples


@dataclass(frozen=True)
class ScoringConfig:
    """How a model is asked: its maximum context, batch size, device and the empty-context prefix token."""

    max_len: int
    batch_size: int = 16
    device: str = "cpu"
    prefix_token_id: int | None = None  # None: default_prefix_token_id(tokenizer)


def score_examples(
    model: nn.Module,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    cfg: ScoringConfig,
    output_type: str = "multiple_choice",
    generation: Generation | None = None,
) -> list[ExampleResult]:
    """Per-example results for rendered examples (log-likelihood tasks in one batched pass)."""
    prefix = cfg.prefix_token_id if cfg.prefix_token_id is not None else default_prefix_token_id(tokenizer)
    if output_type == "generate_until":
        return [_generate_one(model, tokenizer, ex, cfg, prefix, generation or Generation()) for ex in examples]
    encoded: list[list[EncodedPair]] = [
        [encode_pair(tokenizer, ex.context, cont, prefix) for cont in ex.continuations] for ex in examples
    ]
    flat = [(p.context_ids, p.continuation_ids) for pairs in encoded for p in pairs]
    scores = score_token_pairs(model, flat, cfg.max_len, cfg.batch_size, cfg.device)
    out, pos = [], 0
    for ex, pairs in zip(examples, encoded):
        s = scores[pos : pos + len(pairs)]
        pos += len(pairs)
        lls = [x.logprob for x in s]
        common = dict(task=ex.task, doc_id=ex.doc_id, context=ex.context, choices=list(ex.choices),
                      target_delimiter=ex.target_delimiter, loglikelihoods=lls, n_tokens=[x.n_tokens for x in s],
                      is_greedy=[x.is_greedy for x in s], truncated=any(x.truncated for x in s),
                      boundary_merged=any(p.boundary_merged for p in pairs))
        if output_type == "loglikelihood":
            acc = float(s[0].is_greedy)
            out.append(ExampleResult(prediction=0 if s[0].is_greedy else -1, prediction_norm=None, gold=0,
                                     scores={"acc": acc}, **common))
        else:
            preds = choice_predictions(lls, ex.choices)
            gold = int(ex.gold)  # type: ignore[arg-type]
            sc = {"acc": float(preds.pred == gold), "acc_norm": float(preds.pred_norm == gold),
                  "acc_bytes": float(preds.pred_bytes == gold)}
            out.append(ExampleResult(prediction=preds.pred, prediction_norm=preds.pred_norm, gold=gold,
                                     scores=sc, **common))
    return out


def _generate_one(model: nn.Module, tokenizer: Tokenizer, ex: Example, cfg: ScoringConfig, prefix: int,
                  gen: Generation) -> ExampleResult:
    ids = generation_context_ids(tokenizer, ex.context, prefix)
    text = greedy_generate(model, tokenizer, ids, gen.until, gen.max_gen_toks, cfg.max_len, cfg.device)
    golds = list(ex.gold)  # type: ignore[arg-type]
    return ExampleResult(
        task=ex.task, doc_id=ex.doc_id, context=ex.context, choices=[], target_delimiter=ex.target_delimiter,
        loglikelihoods=[], n_tokens=[], is_greedy=[], prediction=text, prediction_norm=None, gold=golds,
        scores={"exact_match": exact_match(text, golds), "f1": token_f1(text, golds)},
        truncated=len(ids) > cfg.max_len - gen.max_gen_toks,
    )


@torch.no_grad()
def evaluate_task(
    model: nn.Module,
    tokenizer: Tokenizer,
    task: TaskSpec,
    ctx: DataContext,
    cfg: ScoringConfig,
    limit: int | None = None,
    examples: Sequence[Example] | None = None,
) -> TaskResult:
    """Score a task (its first ``limit`` examples, or the given ``examples``) and aggregate its metrics."""
    origin = "given examples"
    if examples is None:
        examples, origin = build_examples(task, ctx, limit)
    results = score_examples(model, tokenizer, examples, cfg, task.output_type, task.generation)
    prefix = cfg.prefix_token_id if cfg.prefix_token_id is not None else default_prefix_token_id(tokenizer)
    protocol = {
        "output_type": task.output_type, "num_fewshot": task.num_fewshot, "max_len": cfg.max_len,
        "tokenizer": getattr(tokenizer, "name", type(tokenizer).__name__), "prefix_token_id": prefix,
        "source": origin, "limit": limit, "target_delimiter": task.target_delimiter,
    }
    return aggregate(task.name, results, task.metrics, protocol)
