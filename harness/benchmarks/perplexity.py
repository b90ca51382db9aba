"""The perplexity measurement: causality guard first, then sliding-window NLL on a held-out split."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.metrics.causality import CausalityResult, check_causality
from harness.metrics.perplexity import PerplexityResult, sliding_window_nll, unigram_nll
from harness.workbench import TrainedModel, Workbench


@dataclass
class PerplexityMeasurement:
    result: PerplexityResult | None
    causality: CausalityResult
    protocol: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)


def measure(
    wb: Workbench,
    tm: TrainedModel,
    dataset: str,
    split: str = "test",
    window: int | None = None,
    stride: int | None = None,
) -> PerplexityMeasurement:
    cfg = tm.train_cfg
    window = window or cfg.seq_len
    stride = stride or window
    causality = check_causality(tm.module, tm.tokenizer.vocab_size, seq_len=min(64, window))
    ids = wb.ids(dataset, split)
    if cfg.eval_tokens is not None:
        ids = ids[: cfg.eval_tokens]
    protocol = {
        "dataset": dataset,
        "split": split,
        "tokenizer": tm.tokenizer.name,
        "unit": "token",
        "window": window,
        "stride": stride,
        "eval_tokens": int(len(ids)),
        "split_tokens": int(len(wb.ids(dataset, split))),
        "scored": "every token after the first, once; exact per-token NLL summed in float64",
    }
    metrics: dict[str, Any] = {}
    result = None
    if not tm.result.diverged:
        nll_sum, n_scored = sliding_window_nll(tm.module, ids, window, stride, cfg.eval_batch_size, wb.device)
        text = tm.tokenizer.decode(ids)
        n_words = _count_words(tm, ids, text)
        result = PerplexityResult(nll_sum, n_scored, len(text.encode("utf-8")), n_words)
        metrics.update(result.metrics())
        uni = unigram_nll(wb.ids(dataset, "train"), ids, tm.tokenizer.vocab_size)
        metrics["unigram_ppl"] = math.exp(uni)
        metrics["ppl_over_unigram"] = metrics["ppl"] / metrics["unigram_ppl"]
        floor_bits = tm.corpus.entropy_rate_bits
        if floor_bits is not None:
            # The source's entropy per byte times bytes per token: the exact per-token floor for any tokenizer.
            floor_nll = floor_bits * math.log(2) * result.n_bytes / max(1, len(ids))
            metrics["floor_ppl"] = math.exp(floor_nll)
            metrics["ppl_over_floor"] = metrics["ppl"] / metrics["floor_ppl"]
            metrics["floor_bits_per_byte"] = floor_bits
        protocol["word_unit"] = "whitespace words + one <eos> per line" if n_words else None
    return PerplexityMeasurement(result, causality, protocol, metrics)


def _count_words(tm: TrainedModel, ids, text: str) -> int | None:
    if not tm.corpus.word_level:
        return None
    if tm.tokenizer.name == "word":
        return int(len(ids))  # one token per word or <eos>
    return sum(len(line.split()) + 1 for line in text.splitlines())
