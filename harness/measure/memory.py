"""Peak memory of one training step and of one inference forward, with and without gradient checkpointing, over a
sweep of sequence lengths, and the fitted log-log slope of memory against length.

Methods (each record names its own):
- CUDA: ``torch.cuda.reset_peak_memory_stats`` after the model, its optimizer state and a warm-up step are
  resident; the step's peak is ``max_memory_allocated - memory_allocated`` at the reset (and the same for
  ``reserved``). Measured in a loop of its own, never while timing.
- CPU: peak resident memory (``VmHWM``) minus resident memory (``VmRSS``) at the same point, in a **fresh
  subprocess** per model (so earlier tests do not pollute it), with the kernel's high-water mark reset before each
  measurement (``/proc/self/clear_refs`` ← 5) and glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``) so that
  freed tensors go back to the kernel instead of into a heap that a later step would reuse unseen.

Gradient checkpointing is applied here, to a measurement copy, by wrapping each block of the model (the largest
``nn.ModuleList`` of same-typed modules) in ``torch.utils.checkpoint.checkpoint`` (non-reentrant): the training
loop is untouched. The step is the training loop's (``training.train_step`` + ``AdamW.step``).
"""
from __future__ import annotations

import copy
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from harness.measure.result import Result
from harness.provision.training import train_step

if TYPE_CHECKING:
    from harness.provision import Fresh

MB = 1024 * 1024
CPU_METHOD = ("peak RSS: VmHWM - VmRSS after resetting the high-water mark (/proc/self/clear_refs 5), in a fresh "
              "subprocess per model, MALLOC_MMAP_THRESHOLD_=65536")
CUDA_METHOD = "torch.cuda.max_memory_allocated/max_memory_reserved after reset_peak_memory_stats, minus the resident"


# ------------------------------------------------------------------------------------------ checkpointing


class Checkpointed(nn.Module):
    """A block whose activations are recomputed in the backward pass instead of kept (when grad is enabled)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.block(*args, **kwargs)
        return checkpoint(self.block, *args, use_reentrant=False, **kwargs)


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's blocks: the ``nn.ModuleList`` of same-typed modules holding the most parameters."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) and len({type(m) for m in mod}) == 1:
            n = sum(p.numel() for p in mod.parameters())
            if best is None or n > best[0]:
                best = (n, name, mod)
    if best is None:
        raise ValueError(f"{type(model).__name__} has no nn.ModuleList of blocks to checkpoint")
    return best[1], best[2]


def has_blocks(model: nn.Module) -> bool:
    try:
        find_blocks(model)
        return True
    except ValueError:
        return False


def with_checkpointing(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose blocks are ``Checkpointed`` (the original is left alone)."""
    out = copy.deepcopy(model)
    _, blocks = find_blocks(out)
    for i in range(len(blocks)):
        blocks[i] = Checkpointed(blocks[i])
    return out


# ---------------------------------------------------------------------------------------------- meters


class RssMeter:
    """Linux resident memory of this process: the high-water mark since the last ``reset``."""

    method = CPU_METHOD

    @staticmethod
    def _status() -> dict[str, int]:
        text = Path("/proc/self/status").read_text()
        return {k: int(re.search(rf"{k}:\s+(\d+) kB", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}

    def reset(self) -> int:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc: the fixed mmap threshold still returns large blocks
            pass
        Path("/proc/self/clear_refs").write_text("5")
        return self._status()["VmRSS"]

    def peak(self) -> dict[str, int]:
        return {"peak": self._status()["VmHWM"]}


class CudaMeter:
    method = CUDA_METHOD

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> int:
        gc.collect()
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._reserved = torch.cuda.memory_reserved(self.device)
        return torch.cuda.memory_allocated(self.device)

    def peak(self) -> dict[str, int]:
        torch.cuda.synchronize(self.device)
        return {"peak": torch.cuda.max_memory_allocated(self.device),
                "peak_reserved": torch.cuda.max_memory_reserved(self.device), "reserved_at_reset": self._reserved}


# ------------------------------------------------------------------------------------------------ probe


@dataclass
class ProbeSpec:
    """What the probe builds and measures (JSON-able: it crosses into the subprocess)."""

    model: str  # a registered name or an import string
    preset: str  # the size preset (``Budget.preset``)
    vocab_size: int
    seed: int
    lengths: list[int]
    batch: int
    train: dict[str, Any]  # TrainConfig.to_dict()
    checkpointing: bool = True
    device: str = "cpu"


@dataclass
class ProbeRow:
    seq_len: int
    mode: str  # "train" | "train_ckpt" | "infer"
    base_bytes: int
    peak_bytes: int  # above base
    extra: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def run_probe(spec: ProbeSpec) -> list[ProbeRow]:
    """Build the model, then for every length and mode: a warm-up, a reset of the meter, one step, the peak."""
    from harness.config import TrainConfig
    from harness.measure.throughput import is_oom
    from harness.models import get_model_spec
    from harness.provision.training import make_optimizer

    device = torch.device(spec.device)
    meter = CudaMeter(device) if device.type == "cuda" else RssMeter()
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.train.items()})
    ms = get_model_spec(spec.model)
    torch.manual_seed(spec.seed)
    plain = ms.build(ms.config(spec.vocab_size, max(spec.lengths), spec.preset)).to(device)
    models = {"train": plain, "infer": plain}
    if spec.checkpointing and has_blocks(plain):
        models["train_ckpt"] = with_checkpointing(plain)
    opts = {k: make_optimizer(m, cfg) for k, m in models.items() if k != "infer"}
    g = torch.Generator().manual_seed(spec.seed)
    rows: list[ProbeRow] = []
    for n in spec.lengths:
        chunk = torch.randint(0, spec.vocab_size, (spec.batch, n + 1), generator=g).to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        for mode, model in models.items():
            try:
                _step(model, opts.get(mode), x, y, cfg.grad_clip)  # warm-up: optimizer state, lazy buffers, pools
                base = meter.reset()
                _step(model, opts.get(mode), x, y, cfg.grad_clip)
                peak = meter.peak()
                rows.append(ProbeRow(n, mode, base, peak.pop("peak") - base, peak))
            except Exception as exc:  # noqa: BLE001 - out of memory at a length is a finding, not a crash
                if not is_oom(exc):
                    raise
                rows.append(ProbeRow(n, mode, 0, 0, error=f"out of memory: {str(exc).splitlines()[0][:160]}"))
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def _step(model: nn.Module, opt: torch.optim.Optimizer | None, x: torch.Tensor, y: torch.Tensor,
          grad_clip: float) -> None:
    """One training step of the loop (with ``opt``) or one inference forward (without)."""
    if opt is None:
        model.eval()
        with torch.inference_mode():
            model(x)
        return
    model.train()
    train_step(model, opt, x, y, grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)


def probe_in_subprocess(spec: ProbeSpec, timeout: float = 1800) -> list[ProbeRow]:
    """``run_probe`` in a fresh Python process (same interpreter, same import path, same thread count)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    proc = subprocess.run([sys.executable, "-m", "harness.measure.memory"], input=json.dumps(asdict(spec)),
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"memory probe subprocess failed (exit {proc.returncode}): {tail[0]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return [ProbeRow(**r) for r in out]


def _main() -> int:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    spec = ProbeSpec(**json.loads(sys.stdin.read()))
    rows = run_probe(spec)
    print(json.dumps([asdict(r) for r in rows]))
    return 0


# ------------------------------------------------------------------------------------------ measurement


@dataclass(frozen=True)
class MemorySweep:
    lengths: tuple[int, ...]
    batch: int


_CPU_SWEEPS = {"micro": MemorySweep((64, 128, 256), 2), "smoke": MemorySweep((256, 512, 1024, 2048), 2),
               "small": MemorySweep((512, 1024, 2048, 4096), 1), "full": MemorySweep((512, 1024, 2048, 4096), 1)}
_GPU_SWEEP = MemorySweep((512, 1024, 2048, 4096, 8192), 1)


def memory_sweep(budget: str, device_type: str, lengths: list[int] | None = None) -> MemorySweep:
    """The lengths (at a fixed batch) of a budget on a device type; ``lengths`` (``--seq-lens``) replaces them."""
    base = _GPU_SWEEP if device_type == "cuda" and budget != "micro" else _CPU_SWEEPS[budget]
    return MemorySweep(tuple(lengths), base.batch) if lengths else base


def loglog_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (numpy.polyfit); None with fewer than two positive points."""
    pts = [(x, y) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def measure(fm: "Fresh", sweep: MemorySweep, out_dir: Path | None = None) -> Result:
    """Peak memory of a training step (plain and checkpointed) and of inference at every length of ``sweep``."""
    cell = fm.cell
    spec = ProbeSpec(model=cell.model, preset=fm.model_cfg.budget, vocab_size=fm.model_cfg.vocab_size,
                     seed=cell.seed or 0, lengths=list(sweep.lengths), batch=sweep.batch,
                     train=fm.train_cfg.to_dict(), device=str(fm.device))
    if fm.device.type == "cuda":
        rows, method = run_probe(spec), CUDA_METHOD
    else:
        rows, method = probe_in_subprocess(spec), CPU_METHOD
    table: dict[str, dict[int, ProbeRow]] = {}
    for r in rows:
        table.setdefault(r.mode, {})[r.seq_len] = r
    metrics: dict[str, Any] = {}
    fits: dict[str, tuple[float, float]] = {}
    for mode, by_len in table.items():
        ok = {n: r for n, r in by_len.items() if r.error is None and r.peak_bytes > 0}
        for n, r in ok.items():
            metrics[f"L{n}_{mode}_peak_mb"] = r.peak_bytes / MB
            if "peak_reserved" in r.extra:
                metrics[f"L{n}_{mode}_peak_reserved_mb"] = (r.extra["peak_reserved"] - r.extra["reserved_at_reset"]) / MB
        lengths = sorted(ok)
        slope = loglog_slope(lengths, [ok[n].peak_bytes for n in lengths])
        if slope is not None:
            metrics[f"{mode}_memory_slope"] = slope
            tail = loglog_slope(lengths[-2:], [ok[n].peak_bytes for n in lengths[-2:]])
            metrics[f"{mode}_memory_slope_tail"] = tail
            fits[mode] = (slope, float(np.log(ok[lengths[-1]].peak_bytes) - slope * np.log(lengths[-1])))
    longest = max(sweep.lengths)
    plain, ckpt = table.get("train", {}).get(longest), table.get("train_ckpt", {}).get(longest)
    if plain and ckpt and plain.error is None and ckpt.error is None and plain.peak_bytes > 0:
        metrics["ckpt_over_plain"] = ckpt.peak_bytes / plain.peak_bytes
        metrics["train_peak_mb"] = plain.peak_bytes / MB
        metrics["train_ckpt_peak_mb"] = ckpt.peak_bytes / MB
    infer = table.get("infer", {}).get(longest)
    if infer and infer.error is None:
        metrics["infer_peak_mb"] = infer.peak_bytes / MB
    if table.get("train", {}).get(longest):
        metrics["baseline_mb"] = table["train"][longest].base_bytes / MB
    probe_model = fm.build()
    blocks = find_blocks(probe_model)[0] if has_blocks(probe_model) else None
    protocol = {
        "method": method, "device": str(fm.device), "threads": torch.get_num_threads(), "batch": sweep.batch,
        "lengths": list(sweep.lengths), "seq_len": longest, "rows": [asdict(r) for r in rows],
        "baseline": "resident after building the model, its AdamW state and one warm-up step (gradients freed)",
        "peak": "the step's peak above that baseline; headline numbers at the longest length",
        "train_step": "harness.provision.training.train_step + AdamW.step",
        "inference": "model(x) in torch.inference_mode",
        "checkpointing": (f"torch.utils.checkpoint (non-reentrant) around each of {blocks}[i], on a measurement copy"
                          if blocks else "not measured: the model has no nn.ModuleList of blocks to wrap"),
        "slope": "numpy.polyfit of log peak against log length (all lengths; _tail: the last two)",
        "model": "freshly initialised (memory is fixed by shapes); random token ids",
    }
    errors = [f"L={r.seq_len} {r.mode}: {r.error}" for r in rows if r.error]
    if blocks is None:
        errors.append(f"{cell.model} has no nn.ModuleList of blocks: gradient checkpointing not measured")
    artefacts = {}
    if out_dir is not None and fits:
        artefacts["memory_plot"] = str(plot_memory(table, fits, cell, method, out_dir))
    if not metrics.get("train_peak_mb"):
        return Result(protocol=protocol, status="oom", reason=f"{cell.model}: no training step fit in memory at "
                      f"L={longest} ({'; '.join(errors)[:300]})", artefacts=artefacts)
    return Result(metrics=metrics, protocol=protocol, artefacts=artefacts, notes="; ".join(errors) or None)


def plot_memory(table: dict[str, dict[int, ProbeRow]], fits: dict[str, tuple[float, float]], cell, method: str,
                out_dir: Path) -> Path:
    from harness.measure.plots import artefact_path, line_panels

    series, fit_lines = [], []
    for mode, by_len in table.items():
        ok = sorted(n for n, r in by_len.items() if r.error is None and r.peak_bytes > 0)
        series.append((mode, ok, [by_len[n].peak_bytes / MB for n in ok], None, None))
        if mode in fits and ok:
            slope, icpt = fits[mode]
            fit_lines.append((f"{mode} fit: slope {slope:.2f}", ok, [float(np.exp(icpt)) * n ** slope / MB for n in ok]))
    title = f"{cell.model} peak memory per step ({cell.budget}, {cell.device}; {method.split(':')[0]})"
    return line_panels(artefact_path(out_dir, cell.cell_id, "memory"), title, [
        {"xlabel": "sequence length", "ylabel": "peak above resident (MiB)", "series": series, "fit": fit_lines}])


if __name__ == "__main__":
    raise SystemExit(_main())
