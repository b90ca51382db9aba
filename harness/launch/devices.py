"""Which device and how many threads a process uses, from its xdist worker id (or its Ray task).

Why here: with several GPUs, ``pytest -n N`` must put worker i on GPU i mod n (not every worker on cuda:0), and on
CPU the cores are split between workers instead of oversubscribed. Cells record the device *type*; the record's
environment names the exact device that ran them. A Ray task is different: Ray already restricted it to the GPU it
granted (``CUDA_VISIBLE_DEVICES``), so it always uses the first visible one.
"""
from __future__ import annotations

import os

import torch


def worker_index(worker: str | None) -> int:
    """``"gw3"`` -> 3; the controller, a serial run or a Ray task (``"ray-…"``) -> 0."""
    if not worker or not worker.startswith("gw"):
        return 0
    digits = worker[2:]
    return int(digits) if digits.isdigit() else 0


def worker_device(device_type: str, worker: str | None, n_gpus: int | None = None) -> torch.device:
    """CPU stays CPU; CUDA goes to GPU ``worker_index mod n_gpus``."""
    if device_type != "cuda":
        return torch.device("cpu")
    n = torch.cuda.device_count() if n_gpus is None else n_gpus
    return torch.device("cuda", worker_index(worker) % max(1, n))


def usable_cores() -> int:
    """The cores this process may run on (a container's or a job's CPU set, not the whole machine's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def split_threads(n_workers: int, cpu_count: int | None = None) -> int:
    """Threads per worker so that workers together use every core once."""
    return max(1, (cpu_count or usable_cores()) // max(1, n_workers))


def auto_workers(device: str, gpu: bool) -> int | None:
    """``-n auto`` on a machine whose cells run on CUDA: one worker per GPU (None: xdist's own count, one per core,
    which the cores-split then shares out)."""
    if device == "cpu" or not (device == "cuda" or gpu or torch.cuda.is_available()):
        return None
    n = torch.cuda.device_count()
    return n or None


def describe(device: torch.device) -> dict[str, str | int | None]:
    """What a record says about where it ran (and with how many CPU threads)."""
    out: dict[str, str | int | None] = {"device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(device)
    return out
