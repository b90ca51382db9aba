"""The perplexity measurement: causality guard first, then sliding-window NLL on a held-out split."""
from __future__ import annotations

import math

import numpy as np
from dataclasses import dataclass, field
from typing import Any

from harness.metrics.causality import CausalityResult, check_causality
from harness.data import token_byte_lengths
from harness.metrics.perplexity import PerplexityResult, scored_mask, sliding_window_nll, unigram_nll
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
        "scored": "tokens no earlier window scored; exact per-token NLL summed in float64",
        "device": str(wb.device),
    }
    metrics: dict[str, Any] = {}
    result = None
    if not tm.result.diverged:
        nll_sum, n_scored = sliding_window_nll(tm.module, ids, window, stride, cfg.eval_batch_size, wb.device)
        scored = scored_mask(len(ids), window, stride)
        assert int(scored.sum()) == n_scored
        n_bytes = int(token_byte_lengths(tm.tokenizer)[ids[scored]].sum())
        n_words, word_unit = _scored_words(tm, ids, scored, n_bytes)
        result = PerplexityResult(nll_sum, n_scored, n_bytes, n_words)
        metrics.update(result.metrics())
        uni = unigram_nll(wb.ids(dataset, "train"), ids, tm.tokenizer.vocab_size)
        metrics["unigram_ppl"] = math.exp(uni)
        metrics["ppl_over_unigram"] = metrics["ppl"] / metrics["unigram_ppl"]
        floor_bits = tm.corpus.entropy_rate_bits
        if floor_bits is not None:
            # The source's entropy per byte times bytes per token: the exact per-token floor for any tokenizer.
            floor_nll = floor_bits * math.log(2) * n_bytes / n_scored
            metrics["floor_ppl"] = math.exp(floor_nll)
            metrics["ppl_over_floor"] = metrics["ppl"] / metrics["floor_ppl"]
            metrics["floor_bits_per_byte"] = floor_bits
        protocol["normalisers"] = "tokens and bytes of exactly the scored tokens"
        protocol["word_unit"] = word_unit
    return PerplexityMeasurement(result, causality, protocol, metrics)


def _scored_words(tm: TrainedModel, ids: np.ndarray, scored: np.ndarray, n_bytes: int) -> tuple[float | None, str | None]:
    """Words behind the scored tokens: exact for the word tokenizer (one token per word or <eos>); for subword
    tokenizers the words of the evaluated text pro-rated by the fraction of its bytes that were scored."""
    if not tm.corpus.word_level:
        return None, None
    if tm.tokenizer.name == "word":
        return float(scored.sum()), "word tokens + <eos> (exact)"
    text = tm.tokenizer.decode(ids)
    words = sum(len(line.split()) + 1 for line in text.splitlines())
    total_bytes = int(token_byte_lengths(tm.tokenizer)[ids].sum())
    return words * n_bytes / total_bytes, "whitespace words + one <eos> per line, pro-rated by scored bytes"
