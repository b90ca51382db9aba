"""Harness overhead: the perplexity evaluation path's tokens/s against a bare ``model(x)`` loop over the same batches.

Why: a benchmark whose own bookkeeping costs as much as the model measures the harness. Three loops over the same
windows, under ``torch.no_grad``, timed in the same interleaved rounds (ratios per round, median kept):

- ``bare``: ``model(x)`` and nothing else;
- ``library``: ``model(x)`` + ``F.cross_entropy(..., reduction="sum")`` in float32 - the cheapest exact evaluator a
  user would write, and the floor for any evaluator: every logit must go through an ``exp`` for the normaliser;
- ``eval``: ``perplexity.sliding_window_nll`` - window planning and batching, the per-token NLL, masking, the
  float64 sum.

``overhead_ratio`` = bare / eval is the issue's number; ``overhead_vs_library`` = library / eval isolates the
harness's own cost. ``floor_ratio`` = bare / library says how close *any* exact evaluator can get to the bare loop:
with a 64-wide model and GPT-2's 50,257-token vocabulary the head costs 2·64 FLOPs per logit and the softmax's
``exp`` alone about a fifth of that on a CPU, so bare / eval cannot reach 0.9 there whatever the harness does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from harness.measure.perplexity import plan_windows, sliding_window_nll
from harness.measure.result import Result
from harness.measure.timing import TIMER, concurrency, speed_ratio, time_side_by_side

if TYPE_CHECKING:
    from harness.provision import Fresh


def measure_overhead(fm: "Fresh", vocab_size: int, window: int, batch_size: int, n_batches: int = 1,
                     rounds: int | None = None, min_block_s: float = 0.05) -> Result:
    """Evaluation-path tokens/s over bare-loop tokens/s for ``fm``'s architecture at ``vocab_size``. ``rounds``
    defaults to 7, or 3 at vocabularies above 4,096 (a round of GPT-2-sized logits takes seconds on a CPU)."""
    rounds = rounds or (7 if vocab_size <= 4096 else 3)
    model = fm.build(max_seq_len=window, vocab_size=vocab_size).eval()
    n_windows = n_batches * batch_size
    rng = np.random.default_rng(fm.cell.seed or 0)
    ids = rng.integers(0, vocab_size, size=n_windows * window, dtype=np.int64)
    plan = plan_windows(len(ids), window, window)
    if len(plan) != n_windows or any(w.end - w.begin != window for w in plan):
        raise AssertionError(f"expected {n_windows} disjoint windows of {window}, planned {len(plan)}")
    ids_t = torch.from_numpy(ids)
    xs = [torch.stack([ids_t[w.begin : w.end] for w in plan[i : i + batch_size]]).to(fm.device)
          for i in range(0, n_windows, batch_size)]
    scored: list[int] = []

    def evaluate() -> None:
        scored.append(sliding_window_nll(model, ids, window, window, batch_size, fm.device)[1])

    def bare() -> None:
        with torch.no_grad():
            for x in xs:
                model(x)

    def library() -> None:
        with torch.no_grad():
            for x in xs:
                logits = model(x)[:, :-1]
                torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size).float(), x[:, 1:].reshape(-1),
                                                  reduction="sum").item()

    t = time_side_by_side({"eval": evaluate, "bare": bare, "library": library}, rounds=rounds,
                          min_block_s=min_block_s)
    tokens = n_windows * window
    metrics: dict[str, Any] = {"vocab_size": float(vocab_size)}
    for name, fast, slow in (("overhead_ratio", "eval", "bare"), ("overhead_vs_library", "eval", "library"),
                             ("floor_ratio", "library", "bare")):
        ratio = speed_ratio(t[fast], t[slow])  # tokens/s of `fast` over tokens/s of `slow`, per round
        metrics |= {name: ratio.median, f"{name}_q1": ratio.q1, f"{name}_q3": ratio.q3}
    for name in t:
        metrics[f"{name}_tokens_per_s"] = t[name].rate(tokens).median
    protocol = {
        "vocab_size": vocab_size, "window": window, "stride": window, "batch_size": batch_size,
        "batches_per_call": n_batches, "rounds": rounds, "tokens_per_call": tokens, "scored_per_call": scored[-1],
        "device": str(fm.device), "threads": torch.get_num_threads(), "timer": TIMER, "concurrency": concurrency(),
        "timings": {k: v.to_dict() for k, v in t.items()}, "seq_len": window,
        "ratio": "time of one loop over another, per round (overhead_ratio: bare/eval; overhead_vs_library: "
                 "library/eval; floor_ratio: bare/library); median and quartiles over rounds",
        "library": "model(x) + F.cross_entropy(logits[:, :-1] as float32, x[:, 1:], reduction='sum')",
        "eval_path": "harness.measure.perplexity.sliding_window_nll (disjoint windows, the perplexity default)",
        "model": "freshly initialised at this vocabulary size, ids uniform over the vocabulary",
    }
    # Targets per vocabulary size: which ratio can be asked of the harness depends on it (fixtures/targets).
    return Result(metrics=metrics, protocol=protocol, target_section=f"overhead-v{vocab_size}",
                  notes=protocol["concurrency"]["note"])
