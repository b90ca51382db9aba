"""Efficiency: held-out perplexity against training FLOPs, the FLOPs and time to reach a stated target, and
perplexity at fixed FLOP budgets.

Protocol (every record carries it):
- The model trains with the shared loop; every ``every`` steps (and after the last) an ``EvalCallback`` scores the
  first ``eval_tokens`` tokens of the **validation** split (disjoint windows of the training length; the test split
  stays untouched for the perplexity benchmark). Evaluation time is not training time.
- Training FLOPs at an evaluation = tokens trained so far x (forward + backward) FLOPs per token, counted with
  ``FlopCounterMode`` on the model at the training length (``harness.measure.flops``: matmul-class ops).
- Target (MLPerf style, stated up front): ``target_over_floor`` x the source's entropy-rate floor where the data
  has one, else ``target_over_unigram`` x the add-one unigram perplexity of the same tokens. Time-to-target is the
  training wall time at the first evaluation at or below it (not interpolated, as MLPerf counts it); FLOPs-to-target
  is also given interpolated (log FLOPs against log perplexity between the two evaluations around the crossing).
  A run that never gets there says so (``reached_target`` = 0) and has no to-target numbers.
- Perplexity at fixed FLOP budgets: interpolated in log-log between evaluations; budgets outside the curve are left
  out, never extrapolated.
- The Pareto frontier: the evaluations no other point beats on both FLOPs and perplexity (here: of this run; across
  models and budgets in the session report, ``harness.reporting.perf``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from harness.measure.flops import CONVENTION, count_flops
from harness.measure.perplexity import scored_mask, sliding_window_nll, unigram_nll
from harness.measure.result import Result

if TYPE_CHECKING:
    from harness.provision import Provisioned


@dataclass(frozen=True)
class EfficiencyPlan:
    """What an efficiency run evaluates, and against what. Part of the weights' cache key (``variant``)."""

    evals: int  # about this many evaluations over the run
    eval_tokens: int
    target_over_floor: float
    target_over_unigram: float
    flop_budgets: tuple[float, ...]

    def every(self, steps: int) -> int:
        return max(1, steps // self.evals)

    def variant(self, steps: int) -> str:
        return f"efficiency:every={self.every(steps)}:eval_tokens={self.eval_tokens}:split=valid"

    def to_dict(self) -> dict[str, Any]:
        return {"evals": self.evals, "eval_tokens": self.eval_tokens, "target_over_floor": self.target_over_floor,
                "target_over_unigram": self.target_over_unigram, "flop_budgets": list(self.flop_budgets)}


# FLOP budgets are total training FLOPs, scaled to each budget's compute (the plan's 1e9 ... 1e10 FLOPs per token
# are GPU-sized models; a smoke model costs ~1e5-1e6 per token).
PLANS = {
    "micro": EfficiencyPlan(8, 4_096, 1.5, 1.0, (3e9, 1e10, 3e10)),
    "smoke": EfficiencyPlan(16, 8_192, 1.10, 0.7, (3e10, 1e11, 3e11)),
    "small": EfficiencyPlan(20, 65_536, 1.02, 0.5, (1e12, 3e12, 1e13, 3e13)),
    "full": EfficiencyPlan(25, 262_144, 1.01, 0.4, (1e14, 1e15, 1e16, 1e17)),
}


class EvalCallback:
    """The training loop's callback: held-out NLL every ``every`` steps and after the last one."""

    def __init__(self, ids: np.ndarray, window: int, every: int, total_steps: int, batch_size: int = 16) -> None:
        self.ids, self.window, self.every, self.total = ids, window, every, total_steps
        self.batch_size = batch_size

    def __call__(self, step: int, model: nn.Module) -> dict[str, float] | None:
        if step % self.every and step != self.total:
            return None
        device = next(model.parameters()).device
        nll_sum, n = sliding_window_nll(model, self.ids, self.window, self.window, self.batch_size, device)
        nll = nll_sum / n
        return {"nll": nll, "ppl": math.exp(nll)}


# ------------------------------------------------------------------------------------------- curve maths


def loglog_interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """y at ``x`` by linear interpolation of log y against log x; None outside [xs[0], xs[-1]] (no extrapolation)."""
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    lx, ly = np.log(np.asarray(xs, dtype=float)), np.log(np.asarray(ys, dtype=float))
    return float(np.exp(np.interp(math.log(x), lx, ly)))


def first_crossing(xs: Sequence[float], ys: Sequence[float], target: float) -> tuple[int, float] | None:
    """(index of the first point with y <= target, x at the crossing interpolated in log-log from the point
    before it); None if no point reaches the target. At index 0 the crossing is that point's x (an upper bound)."""
    for i, y in enumerate(ys):
        if y <= target:
            if i == 0 or ys[i - 1] == y:
                return i, float(xs[i])
            f = (math.log(target) - math.log(ys[i - 1])) / (math.log(y) - math.log(ys[i - 1]))
            return i, float(math.exp(math.log(xs[i - 1]) + f * (math.log(xs[i]) - math.log(xs[i - 1]))))
    return None


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (cost, loss) not dominated by another (lower or equal cost and strictly lower loss), by cost."""
    out: list[tuple[float, float]] = []
    best = math.inf
    for c, v in sorted(points, key=lambda p: (p[0], p[1])):
        if v < best:
            out.append((c, v))
            best = v
    return out


# ------------------------------------------------------------------------------------------ measurement


def train_flops_per_token(pm: "Provisioned") -> tuple[float, dict[str, Any]]:
    """(forward + backward) FLOPs per token of ``pm``'s model at its training length, and the count's details."""
    ids = pm.ids("train")[: pm.train_cfg.seq_len]
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64)).unsqueeze(0).to(pm.device)
    fc = count_flops(pm.module, x)
    return fc.train_per_token, fc.to_dict()


def measure(pm: "Provisioned", plan: EfficiencyPlan, out_dir: Path | None = None) -> Result:
    """The efficiency of ``pm``'s training run from the evaluations its callback recorded (``pm.train.evals``)."""
    cell = pm.cell
    window = pm.train_cfg.seq_len
    ids = pm.ids("valid")[: plan.eval_tokens]
    protocol: dict[str, Any] = {
        "plan": plan.to_dict(), "split": "valid", "eval_tokens": int(len(ids)), "window": window, "stride": window,
        "every": plan.every(pm.train_cfg.steps), "flops": CONVENTION, "device": str(pm.device),
        "time": "training wall time (evaluations excluded) of the run that trained these weights (train.source)",
        "seq_len": window,
    }
    if pm.preflight is not None:  # the causality guard caught the freshly built model: it was never trained
        protocol["causality"] = {"fresh": pm.preflight.to_dict()}
        return Result(metrics={"causality_max_delta": pm.preflight.max_delta}, protocol=protocol, status="leak",
                      reason=pm.preflight.message(cell.model), leak=True)
    if pm.diverged:
        return Result(protocol=protocol, status="diverged",
                      reason=f"{cell.model} diverged at step {pm.train.diverged_step}: no efficiency curve")
    evals = pm.train.evals
    if not evals:
        raise ValueError(f"{cell.model}: the training run has no evaluations; provision it with an EvalCallback")
    per_token, flop_detail = train_flops_per_token(pm)
    protocol["flop_count"] = flop_detail
    xs = [e["tokens"] * per_token for e in evals]
    ppls = [e["ppl"] for e in evals]
    walls = [e["train_wall_s"] for e in evals]

    unigram = math.exp(unigram_nll(pm.ids("train"), ids, pm.tokenizer.vocab_size))
    floor_bits = pm.corpus.entropy_rate_bits
    if floor_bits is not None:
        mask = scored_mask(len(ids), window, window)
        n_bytes = int(pm.byte_lengths("valid")[: len(ids)][mask].sum())  # exact bytes, as the perplexity measure
        reference = math.exp(floor_bits * math.log(2) * n_bytes / int(mask.sum()))
        target, target_desc = plan.target_over_floor * reference, f"{plan.target_over_floor} x entropy-rate floor"
    else:
        reference = unigram
        target, target_desc = plan.target_over_unigram * reference, f"{plan.target_over_unigram} x unigram ppl"
    protocol["target"] = {"ppl": target, "rule": target_desc, "reference_ppl": reference}

    metrics: dict[str, Any] = {
        "train_flops_per_token": per_token, "final_ppl": ppls[-1], "final_train_flops": xs[-1],
        "target_ppl": target, "n_evals": float(len(evals)),
    }
    metrics["ppl_over_unigram"] = ppls[-1] / unigram
    if floor_bits is not None:
        metrics["ppl_over_floor"] = ppls[-1] / reference
    hit = first_crossing(xs, ppls, target)
    metrics["reached_target"] = 1.0 if hit else 0.0
    if hit:
        i, flops_interp = hit
        metrics |= {"flops_to_target": flops_interp, "flops_to_target_first_eval": xs[i],
                    "time_to_target_s": walls[i], "steps_to_target": float(evals[i]["step"])}
    for b in plan.flop_budgets:
        v = loglog_interp(b, xs, ppls)
        if v is not None:
            metrics[f"ppl_at_{b:.0e}_flops".replace("+", "")] = v
    frontier = pareto_frontier(list(zip(xs, ppls)))
    protocol["curve"] = [{"step": e["step"], "tokens": e["tokens"], "train_flops": x, "ppl": p, "train_wall_s": w}
                         for e, x, p, w in zip(evals, xs, ppls, walls)]
    protocol["frontier"] = [list(p) for p in frontier]
    notes = None if hit else (f"never reached the target ppl {target:.4g} ({target_desc}) in "
                              f"{evals[-1]['step']} steps; best {min(ppls):.4g}")
    artefacts = {}
    if out_dir is not None:
        from harness.measure.plots import artefact_path, scatter_frontier

        path = artefact_path(out_dir, cell.cell_id, "efficiency")
        scatter_frontier(path, f"{cell.model}: validation ppl vs training FLOPs ({cell.dataset}, {cell.budget})",
                         [(cell.model, xs, ppls)], frontier, "training FLOPs", "validation perplexity",
                         hlines=[(f"target {target:.3g}", target)], vlines=[(f"{b:.0e}", b) for b in plan.flop_budgets])
        artefacts["efficiency_plot"] = str(path)
    finite = all(math.isfinite(p) for p in ppls)
    return Result(metrics=metrics, protocol=protocol, artefacts=artefacts, notes=notes,
                  status=None if finite else "nonfinite", reason=None if finite else "a held-out NLL is not finite")
