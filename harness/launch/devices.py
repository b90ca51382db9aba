"""Which device and how many threads a process uses, from its xdist worker id.

Why here: with several GPUs, ``pytest -n N`` must put worker i on GPU i mod n (not every worker on cuda:0), and on
CPU the cores are split between workers instead of oversubscribed. Cells record the device *type*; the record's
environment names the exact device that ran them.
"""
from __future__ import annotations

import os

import torch


def worker_index(worker: str | None) -> int:
    """``"gw3"`` -> 3; the controller or a serial run -> 0."""
    if not worker:
        return 0
    digits = "".join(ch for ch in worker if ch.isdigit())
    return int(digits) if digits else 0


def worker_device(device_type: str, worker: str | None, n_gpus: int | None = None) -> torch.device:
    """CPU stays CPU; CUDA goes to GPU ``worker_index mod n_gpus``."""
    if device_type != "cuda":
        return torch.device("cpu")
    n = torch.cuda.device_count() if n_gpus is None else n_gpus
    return torch.device("cuda", worker_index(worker) % max(1, n))


def split_threads(n_workers: int, cpu_count: int | None = None) -> int:
    """Threads per worker so that workers together use every core once."""
    return max(1, (cpu_count or os.cpu_count() or 1) // max(1, n_workers))


def describe(device: torch.device) -> dict[str, str | None]:
    """What a record says about where it ran."""
    if device.type == "cuda" and torch.cuda.is_available():
        return {"device": str(device), "gpu": torch.cuda.get_device_name(device)}
    return {"device": str(device)}
