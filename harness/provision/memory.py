"""Memory while training: the measured peak, a prediction before anything runs, out-of-memory detection, and
activation checkpointing.

Why here (the provision step): memory is a property of *training* a model at a length. The long-context benchmark
needs three facts about it: how much a run really used (``PeakMemory``), whether a length can fit at all before it
is tried (``predict_training_memory``: a lower bound, so a length is only skipped when even the bound exceeds the
device), and whether a step failed for lack of memory (``is_out_of_memory``) — a result to record, not a crash.

The prediction counts, for the real model on the real device, the bytes of every tensor autograd saves for the
backward pass at three short lengths (``torch.autograd.graph.saved_tensors_hooks``), fits ``a + b·L + c·L²``
per sequence (exact for attention: c comes from the L×L score matrices; ≈ 0 for linear-time mixers) and adds
16 bytes per parameter (fp32 weight, gradient and AdamW's two moments). Transient workspace is not counted, so
the true peak is higher: the prediction is a lower bound.
"""
from __future__ import annotations

import os
import resource
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

MB = 2**20
GIB = 2**30
BYTES_PER_PARAM = 16  # fp32 weight + gradient + AdamW exp_avg + exp_avg_sq
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's ``torch.OutOfMemoryError``, or the CPU allocator's RuntimeError ("can't allocate memory")."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


# ------------------------------------------------------------------------------------------------ measured peak


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory over a block: on CUDA the allocator's peak allocated and reserved bytes (reset on entry); on CPU
    the process's resident-set high-water mark, reset on entry where Linux allows it (otherwise the peak since the
    process started, and the result says so). RSS counts the whole process: data, other cached models and Python."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._start: dict[str, Any] = {}
        self._result: dict[str, Any] | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = {"allocated": torch.cuda.memory_allocated(self.device)}
        else:
            self._start = {"rss_kb": _status_kb("VmRSS"), "reset": _reset_rss_peak()}
        return self

    def __exit__(self, *exc: Any) -> bool:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._result = {
                "kind": "cuda",
                "allocated_start_mb": self._start["allocated"] / MB,
                "allocated_peak_mb": torch.cuda.max_memory_allocated(self.device) / MB,
                "reserved_peak_mb": torch.cuda.max_memory_reserved(self.device) / MB,
            }
        else:
            hwm = _status_kb("VmHWM") if self._start["reset"] else None
            since = "block start" if hwm is not None else "process start"
            if hwm is None:  # ru_maxrss: kilobytes on Linux, the peak over the process's life
                hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = self._start["rss_kb"]
            self._result = {"kind": "rss", "rss_start_mb": start / 1024 if start is not None else None,
                            "rss_peak_mb": hwm / 1024, "peak_since": since}
        return False

    def result(self) -> dict[str, Any] | None:
        return self._result


# ---------------------------------------------------------------------------------------------------- capacity


def _cgroup_limit_bytes() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 2**60:
            return int(raw)
    return None


def device_capacity(device: torch.device | str) -> tuple[int, str]:
    """Bytes a training run on ``device`` can use at most, and what that number is."""
    device = torch.device(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(total), f"{torch.cuda.get_device_name(device)} memory"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit_bytes()
    if limit is not None and limit < total:
        return int(limit), "the container's memory limit"
    return int(total), "physical RAM"


# -------------------------------------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class MemoryPrediction:
    """A lower bound on a training step's peak memory at ``batch`` × ``seq_len``."""

    seq_len: int
    batch: int
    static_bytes: int  # parameters, gradients, AdamW state
    per_seq: tuple[float, float, float]  # saved-activation bytes per sequence: a + b·L + c·L²
    probe_lens: tuple[int, ...]
    capacity_bytes: int
    capacity_what: str

    @property
    def activation_bytes(self) -> float:
        a, b, c = self.per_seq
        return self.batch * (a + b * self.seq_len + c * self.seq_len**2)

    @property
    def bytes(self) -> float:
        return self.static_bytes + self.activation_bytes

    @property
    def exceeds(self) -> bool:
        return self.bytes > self.capacity_bytes

    @property
    def quadratic(self) -> bool:
        """Whether the L² term is at least 1% of the activation memory at this length."""
        a, b, c = self.per_seq
        per = a + b * self.seq_len + c * self.seq_len**2
        return per > 0 and c * self.seq_len**2 > 0.01 * per

    def describe(self) -> str:
        a, b, c = self.per_seq
        shape = f"{b:.3g}·L + {c:.3g}·L² bytes/sequence" if c > 0 else f"{b:.3g}·L bytes/sequence"
        return (f"predicted ≥ {self.bytes / GIB:.3g} GiB to train at {self.batch} × {self.seq_len:,} "
                f"(saved activations {shape}, fitted at L = {', '.join(map(str, self.probe_lens))}; "
                f"+ {self.static_bytes / GIB:.3g} GiB weights, gradients, AdamW) against "
                f"{self.capacity_bytes / GIB:.3g} GiB ({self.capacity_what})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(predicted_mb=self.bytes / MB, exceeds=self.exceeds, quadratic=self.quadratic)
        return d


def saved_activation_bytes(model: nn.Module, ids: torch.Tensor, autocast: str | None = None) -> int:
    """Bytes of the distinct tensors autograd saves for backward in one forward pass plus the loss, parameters
    excluded (they are counted once, as static memory)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr != 0:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    ctx = (torch.autocast(device_type=ids.device.type, dtype=torch.bfloat16) if autocast == "bf16"
           else torch.autocast(device_type=ids.device.type, enabled=False))
    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
            logits = model(ids[:, :-1])
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1))
        del logits, loss
    finally:
        model.train(was_training)
    return int(sum(seen.values()))


def predict_training_memory(build: Callable[[], nn.Module], vocab_size: int, seq_len: int, batch: int,
                            device: torch.device | str, autocast: str | None = None,
                            probe_lens: tuple[int, ...] = (64, 128, 256),
                            max_len: int | None = None, checkpoint: bool = False) -> MemoryPrediction:
    """Build the model on ``device``, count saved-activation bytes at ``probe_lens`` (batch 1), fit
    ``a + b·L + c·L²`` and extrapolate to ``batch`` × ``seq_len`` (see the module docstring: a lower bound).
    ``checkpoint``: training checkpoints activations. Then the bound is what the checkpointed forward saves plus
    one block's activations, which its recomputation in the backward pass holds again (the plain count divided by
    the number of blocks); the inputs a checkpointed block keeps for recomputation are not seen by the hooks, so it
    stays a lower bound."""
    device = torch.device(device)
    lens = tuple(sorted({min(p, max_len) for p in probe_lens} if max_len else set(probe_lens)))
    model = build().to(device)
    static = BYTES_PER_PARAM * sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

    def probe(m: nn.Module) -> list[int]:
        g = torch.Generator().manual_seed(0)
        return [saved_activation_bytes(m, torch.randint(0, vocab_size, (1, n + 1), generator=g).to(device),
                                       autocast) for n in lens]

    sizes = probe(model)
    if checkpoint:
        blocks = _block_list(model)
        enable_checkpointing(model)
        one_block = [s / len(blocks[1]) for s in sizes] if blocks else [0.0] * len(sizes)
        sizes = [ck + one for ck, one in zip(probe(model), one_block)]
    del model
    x = np.asarray(lens, dtype=np.float64)
    y = np.asarray(sizes, dtype=np.float64)
    if len(lens) >= 3:
        coef = np.linalg.lstsq(np.stack([np.ones_like(x), x, x**2], 1), y, rcond=None)[0]
    elif len(lens) == 2:
        coef = np.append(np.linalg.lstsq(np.stack([np.ones_like(x), x], 1), y, rcond=None)[0], 0.0)
    else:
        coef = np.array([0.0, y[0] / x[0], 0.0])
    a, b, c = (float(v) for v in coef)
    # A lower bound must not go negative through fit noise: drop a negative term and refit the rest.
    if c < 0:
        b, c = float(np.max(y / x)), 0.0
        a = 0.0
    a = max(a, 0.0)
    capacity, what = device_capacity(device)
    return MemoryPrediction(seq_len=seq_len, batch=batch, static_bytes=int(static), per_seq=(a, max(b, 0.0), c),
                            probe_lens=lens, capacity_bytes=capacity, capacity_what=what)


# ------------------------------------------------------------------------------------------------ checkpointing


class _Checkpointed:
    """A block's forward recomputed in the backward pass instead of keeping its activations."""

    def __init__(self, forward: Callable[..., Any]) -> None:
        self.forward = forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self.forward, *args, use_reentrant=False, **kwargs)
        return self.forward(*args, **kwargs)


def _block_list(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The model's largest ``nn.ModuleList`` by parameters (its stack of blocks), with its name; None if none."""
    lists = [(name, ml) for name, ml in model.named_modules() if isinstance(ml, nn.ModuleList) and len(ml)]
    return max(lists, key=lambda nm: sum(p.numel() for p in nm[1].parameters())) if lists else None


def enable_checkpointing(model: nn.Module) -> str:
    """Turn on activation checkpointing and say how: Hugging Face's own (``gradient_checkpointing_enable``), else
    each block of the model's largest ``nn.ModuleList`` (by parameters) is recomputed in the backward pass. The
    state dict is unchanged (the forward of each block is wrapped in place), so cached weights load either way."""
    for m in model.modules():
        if getattr(m, "supports_gradient_checkpointing", False):
            if hasattr(m, "activation_checkpointing_enable"):  # transformers >= 5.x's name
                m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            elif hasattr(m, "gradient_checkpointing_enable"):
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            else:
                continue
            return f"Hugging Face activation checkpointing ({type(m).__name__})"
    found = _block_list(model)
    if found is None:
        return "none: the model has no block list to checkpoint"
    name, blocks = found
    for block in blocks:
        if not isinstance(block.__dict__.get("forward"), _Checkpointed):
            block.forward = _Checkpointed(block.forward)
    return f"each of the {len(blocks)} blocks of '{name}' recomputed in backward"
