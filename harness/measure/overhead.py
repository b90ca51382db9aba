"""Harness overhead: the perplexity evaluation path's tokens/s against a bare ``model(x)`` loop over the same batches.

Why: a benchmark whose own bookkeeping costs as much as the model measures the harness. Four loops over the same
windows, under ``torch.no_grad``, timed in the same interleaved rounds (ratios paired per round, median kept):

- ``bare``: ``model(x)`` and nothing else;
- ``eval``: ``perplexity.sliding_window_nll`` - window planning and batching, the per-token NLL, the float64 sum;
- ``library``: ``model(x)`` + ``F.cross_entropy(..., reduction="sum")`` in float32 - what a user would write;
- ``exp_floor``: ``model(x)`` + one in-place ``exp`` of every logit, in cache-sized blocks - the least work any
  exact evaluator must add to the bare loop (the normaliser needs the exponential of every logit), and no more.

``overhead_ratio`` = eval over bare (tokens/s) is the issue's number. ``floor_ratio`` = exp_floor over bare is the
best *any* exact evaluator can reach: with a 64-wide model and GPT-2's 50,257-token vocabulary the head costs
2·64 FLOPs per logit and a vectorised ``exp`` about a quarter of that on a CPU, so eval over bare cannot reach 0.9
there whatever the harness does. ``overhead_vs_floor`` = eval over exp_floor is then the harness's own cost, and
``overhead_vs_library`` compares it with the user's one-liner. Which of them is gated at which vocabulary is in
``fixtures/targets/throughput.toml``.
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

    def exp_floor() -> None:
        with torch.no_grad():
            for x in xs:
                logits = model(x).reshape(-1, vocab_size)
                rows = max(1, (1 << 20) // vocab_size)  # ~4 MB blocks, as the evaluation path's log-softmax
                for block in logits.split(rows):
                    block.exp_()

    def library() -> None:
        with torch.no_grad():
            for x in xs:
                logits = model(x)[:, :-1]
                torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size).float(), x[:, 1:].reshape(-1),
                                                  reduction="sum").item()

    t = time_side_by_side({"eval": evaluate, "bare": bare, "library": library, "exp_floor": exp_floor},
                          rounds=rounds, min_block_s=min_block_s)
    tokens = n_windows * window
    metrics: dict[str, Any] = {"vocab_size": float(vocab_size)}
    for name, fast, slow in (("overhead_ratio", "eval", "bare"), ("overhead_vs_floor", "eval", "exp_floor"),
                             ("overhead_vs_library", "eval", "library"), ("floor_ratio", "exp_floor", "bare"),
                             ("library_ratio", "library", "bare")):
        ratio = speed_ratio(t[fast], t[slow])  # tokens/s of `fast` over tokens/s of `slow`, per round
        metrics |= {name: ratio.median, f"{name}_q1": ratio.q1, f"{name}_q3": ratio.q3}
    for name in t:
        metrics[f"{name}_tokens_per_s"] = t[name].rate(tokens).median
    protocol = {
        "vocab_size": vocab_size, "window": window, "stride": window, "batch_size": batch_size,
        "batches_per_call": n_batches, "rounds": rounds, "tokens_per_call": tokens, "scored_per_call": scored[-1],
        "device": str(fm.device), "threads": torch.get_num_threads(), "timer": TIMER, "concurrency": concurrency(),
        "timings": {k: v.to_dict() for k, v in t.items()}, "seq_len": window,
        "ratio": "tokens/s of one loop over another's, paired per round (overhead_ratio: eval/bare; "
                 "overhead_vs_floor: eval/exp_floor; overhead_vs_library: eval/library; floor_ratio: "
                 "exp_floor/bare; library_ratio: library/bare); median and quartiles over rounds",
        "exp_floor": "model(x) + logits.exp_() in ~4 MB blocks: the least any exact normaliser adds",
        "library": "model(x) + F.cross_entropy(logits[:, :-1] as float32, x[:, 1:], reduction='sum')",
        "eval_path": "harness.measure.perplexity.sliding_window_nll (disjoint windows, the perplexity default)",
        "model": "freshly initialised at this vocabulary size, ids uniform over the vocabulary",
    }
    # Targets per vocabulary size: which ratio can be asked of the harness depends on it (fixtures/targets).
    return Result(metrics=metrics, protocol=protocol, target_section=f"overhead-v{vocab_size}",
                  notes=protocol["concurrency"]["note"])
