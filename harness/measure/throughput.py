"""Throughput: training, prefill and decode tokens/s over sweeps of length and batch, with FLOPs and MFU.

Protocol (every record carries it):
- The model is the cell's architecture freshly initialised (``harness.provision.Fresh``): speed does not depend on
  trained weights, and the length sweep needs models built for positions the trained one never had.
- A *training step* is exactly the training loop's step (``training.train_step`` + ``AdamW.step``); *prefill* is
  one forward over the whole batch in ``torch.inference_mode``; *decode* (models with a key/value or state cache:
  the Hugging Face families) is the marginal time of one more generated token per sequence: ``generate`` of n new
  tokens after a prompt minus a prefill of that prompt, timed in the same rounds, divided by n.
- Timing: ``harness.measure.timing`` (``torch.utils.benchmark.Timer``, synchronised on accelerators), a warm-up
  call first, then interleaved rounds; median and quartiles over rounds. Batches are real training-split windows,
  already on the device.
- FLOPs per token: ``harness.measure.flops`` (FlopCounterMode) at each length; MFU = achieved FLOP/s over the
  device's peak (``harness.measure.hardware``), per point in the metrics, where
  ``harness.results.finalize.impossible`` refuses any above 1 (status ``impossible``).
- A point that runs out of memory is recorded as such in the sweep, not dropped and not fatal.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from harness.config import TrainConfig
from harness.measure.flops import CONVENTION, FlopCount, count_flops
from harness.measure.hardware import MatmulProbe, Peak, best_peak, device_peak
from harness.measure.result import Result
from harness.measure.timing import TIMER, Timing, concurrency, speed_ratio, time_side_by_side

if TYPE_CHECKING:
    from harness.provision import Fresh


# ------------------------------------------------------------------------------------------------------ sweeps


@dataclass(frozen=True)
class Sweep:
    """Where throughput is measured: lengths at a fixed number of tokens per batch, and tokens per batch at the
    base length. ``(base_seq_len, length_tokens // base_seq_len)`` is the headline point."""

    seq_lens: tuple[int, ...]
    length_tokens: int  # tokens per batch of the length sweep (batch = length_tokens // seq_len, at least 1)
    batch_tokens: tuple[int, ...]  # tokens per batch swept at the base length
    base_seq_len: int
    rounds: int = 5
    decode_tokens: int = 32
    min_block_s: float = 0.05

    @property
    def base(self) -> tuple[int, int]:
        return self.base_seq_len, max(1, self.length_tokens // self.base_seq_len)

    def points(self) -> list[tuple[int, int]]:
        """(seq_len, batch) pairs, headline first, no duplicates."""
        pts = [self.base]
        pts += [(n, max(1, self.length_tokens // n)) for n in self.seq_lens]
        pts += [(self.base_seq_len, max(1, t // self.base_seq_len)) for t in self.batch_tokens]
        return list(dict.fromkeys(pts))

    def to_dict(self) -> dict[str, Any]:
        return {"seq_lens": list(self.seq_lens), "length_tokens": self.length_tokens,
                "batch_tokens": list(self.batch_tokens), "base": list(self.base), "rounds": self.rounds,
                "decode_tokens": self.decode_tokens, "min_block_s": self.min_block_s}


# CPU sweeps are scaled to what 2 cores do in seconds; the GPU sweep uses the PSANN plan's tokens per batch
# (65,536 / 131,072 / 262,144) and lengths 512 ... 8k.
_CPU = {
    "micro": dict(seq_lens=(64, 128), batch_tokens=(256, 512, 1024), rounds=3, decode_tokens=8),
    "smoke": dict(seq_lens=(128, 256, 512, 1024), batch_tokens=(1024, 2048, 4096), rounds=5, decode_tokens=32),
    "small": dict(seq_lens=(512, 1024, 2048, 4096, 8192), batch_tokens=(4096, 8192, 16384), rounds=5,
                  decode_tokens=64),
    "full": dict(seq_lens=(512, 1024, 2048, 4096, 8192), batch_tokens=(8192, 16384, 32768), rounds=5,
                 decode_tokens=64),
}
_GPU_TOKENS = (65_536, 131_072, 262_144)
_GPU_LENGTHS = (512, 1024, 2048, 4096, 8192)


def sweep_for(budget: str, device_type: str, base_seq_len: int, tokens_per_step: int,
              seq_lens: list[int] | None = None) -> Sweep:
    """The sweep of a budget on a device type; ``seq_lens`` (``--seq-lens``) replaces the length sweep."""
    if device_type == "cuda" and budget != "micro":
        return Sweep(seq_lens=tuple(seq_lens or _GPU_LENGTHS), length_tokens=_GPU_TOKENS[0],
                     batch_tokens=_GPU_TOKENS, base_seq_len=base_seq_len, rounds=10, decode_tokens=128,
                     min_block_s=0.1)
    p = _CPU[budget]
    return Sweep(seq_lens=tuple(seq_lens or p["seq_lens"]), length_tokens=tokens_per_step,
                 batch_tokens=tuple(p["batch_tokens"]), base_seq_len=base_seq_len, rounds=p["rounds"],
                 decode_tokens=p["decode_tokens"])


# ------------------------------------------------------------------------------------------------ helpers


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def batches(ids: np.ndarray, seq_len: int, batch: int, n: int, seed: int, device: torch.device,
            vocab_size: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches of ``batch`` windows of ``seq_len + 1`` tokens from ``ids`` (seeded offsets), as (x, y) on
    ``device``. Without enough tokens (or with ``ids`` None) random ids below ``vocab_size`` stand in."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if ids is not None and len(ids) > seq_len + 2:
            starts = g.integers(0, len(ids) - seq_len - 1, size=batch)
            chunk = np.stack([ids[s : s + seq_len + 1] for s in starts]).astype(np.int64)
        else:
            chunk = g.integers(0, vocab_size, size=(batch, seq_len + 1), dtype=np.int64)
        t = torch.from_numpy(chunk).to(device)
        out.append((t[:, :-1], t[:, 1:]))
    return out


def step_fns(model: nn.Module, opt: torch.optim.Optimizer, data: list[tuple[torch.Tensor, torch.Tensor]],
             grad_clip: float) -> dict[str, Callable[[], None]]:
    """``train``: one training step of the loop; ``prefill``: one inference forward; each cycles over ``data``."""
    from harness.provision.training import train_step

    train_iter, infer_iter = itertools.cycle(data), itertools.cycle(data)

    def train() -> None:
        x, y = next(train_iter)
        model.train()
        train_step(model, opt, x, y, grad_clip)
        opt.step()

    def prefill() -> None:
        x, _ = next(infer_iter)
        model.eval()
        with torch.inference_mode():
            model(x)

    return {"train": train, "prefill": prefill}


def can_decode(model: nn.Module) -> bool:
    """A Hugging Face causal LM behind ``LogitsOnly``: it has a cache and ``generate``."""
    inner = getattr(model, "inner", None)
    return inner is not None and hasattr(inner, "generate") and bool(getattr(inner, "can_generate", lambda: False)())


# ------------------------------------------------------------------------------------------------- points


@dataclass
class Point:
    seq_len: int
    batch: int
    train: Timing | None = None
    prefill: Timing | None = None
    matmul: Timing | None = None  # the peak probe, timed in the same rounds (measured peaks only)
    flops: FlopCount | None = None
    error: str | None = None

    @property
    def tokens(self) -> int:
        return self.seq_len * self.batch

    def row(self, peak: Peak) -> dict[str, Any]:
        """One row of the sweep table (rates with quartiles, FLOPs, MFU)."""
        row: dict[str, Any] = {"seq_len": self.seq_len, "batch": self.batch, "tokens": self.tokens}
        if self.error:
            return row | {"error": self.error}
        for name, t in (("train", self.train), ("prefill", self.prefill)):
            r = t.rate(self.tokens)
            row |= {f"{name}_tokens_per_s": r.median, f"{name}_q1_tokens_per_s": r.q1,
                    f"{name}_q3_tokens_per_s": r.q3, f"{name}_rel_iqr": t.rel_iqr, f"{name}_timing": t.to_dict()}
        # paired per round: a burst of load hits the training step and the forward of the same round alike
        ratio = speed_ratio(self.train, self.prefill)
        row |= {"train_over_prefill": ratio.median, "train_over_prefill_q1": ratio.q1,
                "train_over_prefill_q3": ratio.q3}
        if self.flops is not None:
            row |= {"fwd_flops_per_token": self.flops.forward_per_token,
                    "bwd_flops_per_token": self.flops.backward_per_token,
                    "train_flops_per_token": self.flops.train_per_token}
            row["train_flops_per_s"] = row["train_tokens_per_s"] * self.flops.train_per_token
            row["prefill_flops_per_s"] = row["prefill_tokens_per_s"] * self.flops.forward_per_token
            row["train_mfu"] = row["train_flops_per_s"] / peak.flops_per_s
            row["prefill_mfu"] = row["prefill_flops_per_s"] / peak.flops_per_s
        return row


def measure_point(model: nn.Module, opt: torch.optim.Optimizer, ids: np.ndarray | None, seq_len: int, batch: int,
                  cfg: TrainConfig, sweep: Sweep, seed: int, vocab_size: int,
                  flops_cache: dict[int, FlopCount], probe: MatmulProbe | None = None) -> Point:
    """Train and prefill timings of one (length, batch) point, timed in the same rounds (with ``probe``, the peak
    matmul too), and the FLOPs per token at that length. Out of memory is recorded on the point, not raised."""
    device = next(model.parameters()).device
    point = Point(seq_len, batch)
    try:
        data = batches(ids, seq_len, batch, 2, seed + seq_len * 7919 + batch, device, vocab_size)
        if seq_len not in flops_cache:
            flops_cache[seq_len] = count_flops(model, data[0][0][:1])
        point.flops = flops_cache[seq_len]
        fns: dict[str, Callable[[], Any]] = dict(step_fns(model, opt, data, cfg.grad_clip))
        if probe is not None:
            fns["matmul"] = probe
        timings = time_side_by_side(fns, rounds=sweep.rounds, min_block_s=sweep.min_block_s)
        point.train, point.prefill, point.matmul = timings["train"], timings["prefill"], timings.get("matmul")
    except Exception as exc:  # noqa: BLE001 - an out-of-memory point is a finding; anything else is re-raised
        if not is_oom(exc):
            raise
        point.error = f"out of memory: {str(exc).splitlines()[0][:160]}"
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return point


@dataclass
class Decode:
    per_token_s: list[float]  # per round: (generate - prefill of the prompt) / new tokens
    batch: int
    prompt_len: int
    new_tokens: int
    greedy_agreement: float  # fraction of generated tokens equal to the argmax of a full forward
    generate: Timing
    prompt_prefill: Timing

    def to_dict(self) -> dict[str, Any]:
        q1, med, q3 = np.quantile(self.per_token_s, [0.25, 0.5, 0.75])
        return {"batch": self.batch, "prompt_len": self.prompt_len, "new_tokens": self.new_tokens,
                "step_median_s": float(med), "step_q1_s": float(q1), "step_q3_s": float(q3),
                "greedy_agreement": self.greedy_agreement, "generate_timing": self.generate.to_dict(),
                "prompt_prefill_timing": self.prompt_prefill.to_dict(),
                "method": "(generate n new tokens - prefill of the prompt) / n, per round, same rounds"}


def measure_decode(model: nn.Module, x: torch.Tensor, new_tokens: int, rounds: int, min_block_s: float) -> Decode:
    """Cached greedy decoding of ``new_tokens`` after the first half of ``x`` (Hugging Face ``generate``)."""
    from transformers import GenerationConfig

    inner = model.inner
    prompt = x[:, : max(1, x.shape[1] // 2)].contiguous()
    mask = torch.ones_like(prompt)
    gc = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                          eos_token_id=None, pad_token_id=0)
    model.eval()

    def generate() -> torch.Tensor:
        with torch.inference_mode():
            return inner.generate(prompt, attention_mask=mask, generation_config=gc)

    def prefill() -> None:
        with torch.inference_mode():
            model(prompt)

    out = generate()
    with torch.inference_mode():  # the cache path must give what a full forward gives
        full = model(out[:, :-1])[:, prompt.shape[1] - 1 :].argmax(-1)
    agreement = float((full == out[:, prompt.shape[1] :]).float().mean())
    t = time_side_by_side({"generate": generate, "prefill": prefill}, rounds=rounds, min_block_s=min_block_s)
    per_token = [(g - p) / new_tokens for g, p in zip(t["generate"].times, t["prefill"].times)]
    return Decode(per_token, prompt.shape[0], prompt.shape[1], new_tokens, agreement, t["generate"], t["prefill"])


# -------------------------------------------------------------------------------------------- measurement


def measure(fm: "Fresh", sweep: Sweep, out_dir: Path | None = None) -> Result:
    """Training, prefill and (where cached) decode throughput of ``fm``'s architecture over ``sweep``."""
    cell = fm.cell
    max_len = max(n for n, _ in sweep.points())
    model = fm.build(max_seq_len=max_len)
    opt = _optimizer(model, fm.train_cfg)
    dtype = next(model.parameters()).dtype
    peak = device_peak(fm.device, dtype)
    # A measured peak (every CPU) is re-measured beside the model at every point: the best round of all counts.
    probe = MatmulProbe(fm.device, dtype) if peak.source.startswith("measured") else None
    ids = fm.ids("train")
    flops_cache: dict[int, FlopCount] = {}
    points = [measure_point(model, opt, ids, n, b, fm.train_cfg, sweep, cell.seed or 0, fm.model_cfg.vocab_size,
                            flops_cache, probe) for n, b in sweep.points()]
    if probe is not None:
        beside = [t for p in points if p.matmul is not None for t in p.matmul.times]
        if beside:
            peak = best_peak([peak, probe.peak(beside, torch.get_num_threads(),
                                               ", the best of a first measurement and of rounds beside the model")])
    rows = [p.row(peak) for p in points]
    protocol: dict[str, Any] = {
        "device": str(fm.device), "threads": torch.get_num_threads(), "dtype": str(dtype).removeprefix("torch."),
        "timer": TIMER, "concurrency": concurrency(), "sweep": sweep.to_dict(), "points": rows, "peak": peak.to_dict(), "flops": CONVENTION,
        "model": "freshly initialised (speed does not depend on trained weights)",
        "train_step": "harness.provision.training.train_step + AdamW.step (the training loop's step)",
        "prefill": "model(x) over the whole batch in torch.inference_mode",
        "seq_len": sweep.base_seq_len,
    }
    base = rows[0]
    if "error" in base:
        return Result(protocol=protocol, status="oom", reason=f"{cell.model}: headline point {sweep.base} "
                                                               f"{base['error']}")
    metrics: dict[str, Any] = {k: v for k, v in base.items() if isinstance(v, (int, float)) and not
                               k.startswith(("seq_len", "batch", "tokens", "train_over_prefill"))}
    metrics["peak_flops_per_s"] = peak.flops_per_s
    measured = [r for r in rows if "error" not in r]
    # the gated number: the largest over the sweep (each point's quartiles are in protocol.points)
    metrics["train_over_prefill"] = max(r["train_over_prefill"] for r in measured)
    for r in measured:
        tag = f"L{r['seq_len']}_B{r['batch']}"
        metrics[f"{tag}_train_tokens_per_s"] = r["train_tokens_per_s"]
        metrics[f"{tag}_prefill_tokens_per_s"] = r["prefill_tokens_per_s"]
        for what in ("train", "prefill"):  # every point's MFU: finalize refuses any above 1 as impossible
            if f"{what}_mfu" in r:
                metrics[f"{tag}_{what}_mfu"] = r[f"{what}_mfu"]
    notes = []
    if can_decode(model):
        n, b = sweep.base
        x = batches(ids, n, b, 1, (cell.seed or 0) + 1, fm.device, fm.model_cfg.vocab_size)[0][0]
        new = min(sweep.decode_tokens, max_len - n // 2)
        dec = measure_decode(model, x, new, sweep.rounds, sweep.min_block_s)
        protocol["decode"] = dec.to_dict()
        d = protocol["decode"]
        if d["step_median_s"] > 0:
            metrics["decode_tokens_per_s"] = dec.batch / d["step_median_s"]
            metrics["decode_q1_tokens_per_s"] = dec.batch / d["step_q3_s"] if d["step_q3_s"] > 0 else math.nan
            metrics["decode_q3_tokens_per_s"] = dec.batch / d["step_q1_s"] if d["step_q1_s"] > 0 else math.nan
            metrics["decode_step_ms"] = d["step_median_s"] * 1e3
        else:
            notes.append("decode not resolved: generate took no longer than a prefill of its prompt (busy machine?)")
        metrics["decode_greedy_agreement"] = dec.greedy_agreement
    else:
        notes.append(f"{cell.model} has no incremental cache: decode is not measured (each new token would be a "
                     "full prefill)")
    if protocol["concurrency"]["note"]:
        notes.append(protocol["concurrency"]["note"])
    skipped = [r for r in rows if "error" in r]
    if skipped:
        notes.append("; ".join(f"L={r['seq_len']} B={r['batch']}: {r['error']}" for r in skipped))
    if out_dir is not None:
        title = f"{cell.model} throughput ({cell.dataset}, {cell.budget}, {fm.device}, {torch.get_num_threads()} threads)"
        path = plot_sweep(rows, sweep, cell.cell_id, title, out_dir)
        artefacts = {"throughput_plot": str(path)}
    else:
        artefacts = {}
    return Result(metrics=metrics, protocol=protocol, artefacts=artefacts, notes="; ".join(notes) or None)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    from harness.provision.training import make_optimizer

    return make_optimizer(model, cfg)


def plot_sweep(rows: list[dict[str, Any]], sweep: Sweep, cell_id: str, title: str, out_dir: Path) -> Path:
    from harness.measure.plots import artefact_path, line_panels

    ok = [r for r in rows if "error" not in r]

    def series(sel: list[dict[str, Any]], x: str) -> list[tuple]:
        out = []
        for name in ("train", "prefill"):
            xs = [r[x] for r in sel]
            ys = [r[f"{name}_tokens_per_s"] for r in sel]
            lo = [y - r[f"{name}_q1_tokens_per_s"] for y, r in zip(ys, sel)]
            hi = [r[f"{name}_q3_tokens_per_s"] - y for y, r in zip(ys, sel)]
            out.append((name, xs, ys, lo, hi))
        return out

    by_len = sorted((r for r in ok if r["batch"] == max(1, sweep.length_tokens // r["seq_len"])
                     and r["seq_len"] in sweep.seq_lens), key=lambda r: r["seq_len"])
    by_batch = sorted((r for r in ok if r["seq_len"] == sweep.base_seq_len), key=lambda r: r["tokens"])
    return line_panels(artefact_path(out_dir, cell_id, "throughput"), title, [
        {"xlabel": f"sequence length ({sweep.length_tokens:,} tokens per batch)", "ylabel": "tokens/s (median, IQR)",
         "series": series(by_len, "seq_len")},
        {"xlabel": f"tokens per batch (length {sweep.base_seq_len})", "ylabel": "tokens/s (median, IQR)",
         "series": series(by_batch, "tokens")},
    ])


# ------------------------------------------------------------------------------------- side-by-side speed


def crossover(lengths: list[int], ratios: list[float]) -> float | None:
    """The first length where ``ratio`` crosses 1 (either way), interpolated linearly in log ratio against log
    length (exact for a power law, the shape speed ratios of mixers with different complexity take); None if it
    stays on one side over the sweep."""
    pairs = [(n, r) for n, r in zip(lengths, ratios) if r is not None and r > 0]
    for (n0, r0), (n1, r1) in zip(pairs, pairs[1:]):
        if (r0 - 1.0) * (r1 - 1.0) <= 0 and r0 != r1:
            f = -math.log(r0) / (math.log(r1) - math.log(r0))
            return float(math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0))))
    return None


def measure_vs(fm: "Fresh", ref: "Fresh", sweep: Sweep) -> Result:
    """Training (and prefill) tokens/s of ``fm``'s architecture over ``ref``'s at every length of the sweep, the two
    timed in the same interleaved rounds; the ratio per length (median of per-round ratios, with quartiles) and the
    length where it crosses 1."""
    cell = fm.cell
    max_len = max(sweep.seq_lens)
    models = {"model": fm.build(max_seq_len=max_len), "reference": ref.build(max_seq_len=max_len)}
    opts = {k: _optimizer(m, fm.train_cfg) for k, m in models.items()}
    ids = fm.ids("train")
    rows: list[dict[str, Any]] = []
    for n in sweep.seq_lens:
        b = max(1, sweep.length_tokens // n)
        row: dict[str, Any] = {"seq_len": n, "batch": b, "tokens": n * b}
        try:
            data = batches(ids, n, b, 2, (cell.seed or 0) + n, fm.device, fm.model_cfg.vocab_size)
            fns = {f"{k}/{what}": fn for k, m in models.items()
                   for what, fn in step_fns(m, opts[k], data, fm.train_cfg.grad_clip).items()}
            t = time_side_by_side(fns, rounds=sweep.rounds, min_block_s=sweep.min_block_s)
        except Exception as exc:  # noqa: BLE001
            if not is_oom(exc):
                raise
            rows.append(row | {"error": f"out of memory: {str(exc).splitlines()[0][:160]}"})
            continue
        for what in ("train", "prefill"):
            ratio = speed_ratio(t[f"model/{what}"], t[f"reference/{what}"])
            row |= {f"{what}_ratio": ratio.median, f"{what}_ratio_q1": ratio.q1, f"{what}_ratio_q3": ratio.q3}
            for k in models:
                row[f"{k}_{what}_tokens_per_s"] = t[f"{k}/{what}"].rate(n * b).median
        row["train_over_prefill"] = max(speed_ratio(t[f"{k}/train"], t[f"{k}/prefill"]).median for k in models)
        row["timings"] = {k: v.to_dict() for k, v in t.items()}
        rows.append(row)
    ok = [r for r in rows if "error" not in r]
    metrics: dict[str, Any] = {}
    for r in ok:
        metrics[f"L{r['seq_len']}_train_ratio"] = r["train_ratio"]
        metrics[f"L{r['seq_len']}_prefill_ratio"] = r["prefill_ratio"]
    if ok:
        metrics["train_over_prefill"] = max(r["train_over_prefill"] for r in ok)
        lengths = [r["seq_len"] for r in ok]
        for what in ("train", "prefill"):
            x = crossover(lengths, [r[f"{what}_ratio"] for r in ok])
            if x is not None:
                metrics[f"{what}_crossover_len"] = x
    protocol = {
        "reference": ref.cell.model, "device": str(fm.device), "threads": torch.get_num_threads(), "timer": TIMER, "concurrency": concurrency(),
        "sweep": sweep.to_dict(), "points": rows, "seq_len": max_len,
        "ratio": f"{cell.model} tokens/s over {ref.cell.model} tokens/s (> 1: {cell.model} faster), per round, "
                 "median and quartiles over rounds; crossover: first length where the ratio crosses 1, "
                 "interpolated in log ratio against log length",
        "model": "both freshly initialised at their presets of this budget (equal non-embedding size)",
        "params": {"model": sum(p.numel() for p in models["model"].parameters()),
                   "reference": sum(p.numel() for p in models["reference"].parameters())},
    }
    if not ok:
        return Result(protocol=protocol, status="oom", reason=f"{cell.model} vs {ref.cell.model}: every length ran "
                                                               "out of memory")
    notes = [f"L={r['seq_len']}: {r['error']}" for r in rows if "error" in r] + [protocol["concurrency"]["note"]]
    return Result(metrics=metrics, protocol=protocol, notes="; ".join(n for n in notes if n) or None)
