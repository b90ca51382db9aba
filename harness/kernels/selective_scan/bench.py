"""Side-by-side training-step timing: Mamba with the fused scan, Mamba with mamba.py's pscan, and the Transformer.

    python -m harness.kernels.selective_scan.bench [--budget smoke] [--batch 16] [--seq-len 128] [--threads 2]
                                                   [--repeats 15] [--models fused,pscan,transformer]
                                                   [--clock wall|cpu] [--json]

Why this shape: absolute CPU timings drift with load (the development machines are shared), so every variant is
timed in one process, round-robin (one step of each per round), and only medians and ratios between variants are
reported. A step is forward + cross-entropy + backward + AdamW, as in the benchmark's training loop, on random byte
tokens (the data does not change the work). Each variant gets warm-up steps before timing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["build_variants", "main", "time_steps"]

VOCAB = 256


def build_variants(names: list[str], budget: str, seq_len: int) -> dict[str, nn.Module]:
    """Models by variant name: 'fused' / 'pscan' (Mamba with that CPU scan) or any registered model name."""
    from harness.models import get_model_spec

    out: dict[str, nn.Module] = {}
    for name in names:
        model_name = "mamba" if name in ("fused", "pscan") else name
        spec = get_model_spec(model_name)
        cfg = spec.config(VOCAB, seq_len, budget)
        if model_name == "mamba":
            cfg.preset["scan"] = name
        torch.manual_seed(0)
        out[name] = spec.build(cfg)
    return out


def _stepper(model: nn.Module, batch: int, seq_len: int) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (batch, seq_len + 1), generator=g)
    model.train()

    def step() -> None:
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def time_steps(models: dict[str, nn.Module], batch: int, seq_len: int, repeats: int, warmup: int = 3,
               clock: str = "wall") -> dict[str, list[float]]:
    """Seconds per training step of each model, interleaved round-robin over ``repeats`` rounds.

    clock="wall" is what a user waits for; clock="cpu" (process CPU time) is far less sensitive to other processes
    on a busy machine, and equals wall time on an idle one when a single thread is used.
    """
    now = CLOCKS[clock]
    steps = {name: _stepper(m, batch, seq_len) for name, m in models.items()}
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = now()
            step()
            times[name].append(now() - t0)
    return times


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="smoke")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--models", default="fused,pscan,transformer")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: elapsed time; cpu: process CPU time (steadier on a busy machine with --threads 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    models = build_variants(names, args.budget, args.seq_len)
    from harness.models.hf import _mamba_notes

    times = time_steps(models, args.batch, args.seq_len, args.repeats, clock=args.clock)
    tokens = args.batch * args.seq_len
    med = {n: statistics.median(ts) for n, ts in times.items()}
    result: dict[str, object] = {
        "budget": args.budget, "batch": args.batch, "seq_len": args.seq_len, "threads": args.threads,
        "repeats": args.repeats, "clock": args.clock, "torch": torch.__version__, "mamba_notes": _mamba_notes(),
        "median_step_s": med, "tokens_per_s": {n: tokens / s for n, s in med.items()},
        "min_step_s": {n: min(ts) for n, ts in times.items()},
    }
    ratios = {}
    if "transformer" in med:
        for n in ("fused", "pscan"):
            if n in med:
                ratios[f"{n}/transformer"] = med["transformer"] / med[n]  # tokens/s ratio
    if "fused" in med and "pscan" in med:
        ratios["fused/pscan"] = med["pscan"] / med["fused"]
    result["tokens_per_s_ratios"] = ratios
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.budget} preset, batch {args.batch} x {args.seq_len} tokens, {args.threads} threads, "
              f"{args.repeats} interleaved rounds, {args.clock} clock (medians)")
        for n, m in med.items():
            print(f"  {n:12s} {1e3 * m:8.1f} ms/step  {tokens / m:9.0f} tokens/s  (min {1e3 * min(times[n]):.1f} ms)")
        for k, v in ratios.items():
            print(f"  tokens/s ratio {k}: {v:.2f}")
    return result


if __name__ == "__main__":
    main()
