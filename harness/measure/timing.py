"""Side-by-side timing on ``torch.utils.benchmark.Timer``: warm-up, interleaved rounds, median and IQR.

Why Timer and not pytest-benchmark's ``benchmark`` fixture: the fixture times one callable per test and switches
itself off under xdist (it would then report nothing, or zeros); a speed *ratio* needs its two sides timed in the
same rounds, one after the other, so that load from other processes hits both alike. ``Timer`` synchronises the
accelerator around every block (``torch.accelerator.synchronize()``: CUDA work is waited for, never timed as a
launch), sets the thread count explicitly, and its ``Measurement`` keeps the raw times and their statistics.

Why interleaved rounds: each round times every variant once, in an order rotated from round to round, so a burst
of load from another process lands on all variants rather than on whichever ran during it. Statistics are over
rounds: a round is one block of ``number`` calls, long enough (``min_block_s``) that the timer's resolution and
per-call jitter do not matter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils.benchmark import Measurement, Timer

TIMER = "torch.utils.benchmark.Timer (accelerator synchronised around each block), interleaved rounds"


def concurrency() -> dict[str, Any]:
    """Who else was using this machine when timing started: under ``pytest -n N`` the other workers share its cores,
    and the load average counts every process (other users' too), so absolute rates are depressed (ratios timed in
    the same rounds much less so). Records carry this; reports say it."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    note = (f"timed while {workers} pytest-xdist workers shared this machine: absolute tokens/s are depressed, "
            "compare only ratios timed in the same rounds") if workers > 1 else None
    out: dict[str, Any] = {"concurrent_workers": workers, "note": note, "cpu_count": os.cpu_count()}
    try:  # how busy the machine was (other users' processes too): 1-minute load average over the cores
        out["load_avg_1m"] = os.getloadavg()[0]
    except OSError:  # not on this platform
        out["load_avg_1m"] = None
    return out


@dataclass
class Timing:
    """Seconds per call of one variant: one value per round (the mean of that round's block of calls)."""

    label: str
    times: list[float]
    number: int  # calls per round
    threads: int
    warmup: int
    measurement: Measurement | None = field(default=None, repr=False, compare=False)

    @property
    def median(self) -> float:
        return float(self.measurement.median) if self.measurement is not None else _quantile(self.times, 0.5)

    @property
    def q1(self) -> float:
        return _quantile(self.times, 0.25)

    @property
    def q3(self) -> float:
        return _quantile(self.times, 0.75)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def rel_iqr(self) -> float:
        """IQR over median: how much to trust the median (a busy machine shows here)."""
        return self.iqr / self.median if self.median > 0 else math.inf

    def rate(self, items_per_call: float) -> "Rate":
        """Items per second (e.g. tokens/s) with quartiles: the rate of the median time, and the rates of the
        quartile times (a slow round is a low rate, so q1 of the rate comes from q3 of the time)."""
        return Rate(median=items_per_call / self.median, q1=items_per_call / self.q3,
                    q3=items_per_call / self.q1)

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "q1_s": self.q1, "q3_s": self.q3, "iqr_s": self.iqr,
                "rel_iqr": self.rel_iqr, "rounds": len(self.times), "calls_per_round": self.number,
                "threads": self.threads, "warmup_calls": self.warmup, "times_s": list(self.times)}


@dataclass(frozen=True)
class Rate:
    median: float
    q1: float
    q3: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def _quantile(xs: list[float], q: float) -> float:
    import numpy as np

    return float(np.quantile(np.asarray(xs, dtype=np.float64), q)) if xs else math.nan


def speed_ratio(fast: Timing, slow: Timing) -> Rate:
    """How many times faster ``fast`` runs than ``slow`` (rate over rate; > 1: ``fast`` is faster), per round,
    with median and quartiles over rounds.

    Why per round: the two were timed one after the other in each round, so a burst of load from another process
    hits both and cancels in their ratio; a ratio of two medians taken over different rounds keeps it."""
    if len(fast.times) != len(slow.times):
        raise ValueError(f"{fast.label} and {slow.label} were not timed in the same rounds")
    per_round = [s / f for f, s in zip(fast.times, slow.times)]
    return Rate(median=_quantile(per_round, 0.5), q1=_quantile(per_round, 0.25), q3=_quantile(per_round, 0.75))


def time_side_by_side(fns: dict[str, Callable[[], Any]], *, rounds: int = 5, warmup: int = 2,
                      min_block_s: float = 0.05, max_number: int = 1000, threads: int | None = None,
                      max_rounds: int | None = None, target_rel_iqr: float = 0.1) -> dict[str, Timing]:
    """Time every callable of ``fns`` in interleaved rounds after ``warmup`` untimed calls each.

    The number of calls per round is chosen per variant from its fastest warm-up call (the first call pays for lazy
    initialisation), so that a round lasts at least ``min_block_s``: fast variants are called several times per
    round, slow ones once. After ``rounds`` rounds, more are run while any variant's IQR exceeds
    ``target_rel_iqr`` of its median, up to ``max_rounds`` (default ``3 * rounds``) - a quiet machine pays for
    ``rounds`` only, a busy one gets more samples instead of a worse median (the idea of ``Timer.adaptive_autorange``,
    kept interleaved)."""
    if rounds < 1 or not fns:
        raise ValueError("need at least one round and one callable")
    threads = threads or torch.get_num_threads()
    max_rounds = max(rounds, max_rounds if max_rounds is not None else 3 * rounds)
    timers = {k: Timer("fn()", globals={"fn": fn}, num_threads=threads, label=k) for k, fn in fns.items()}
    numbers: dict[str, int] = {}
    warm = max(1, warmup)
    for k, timer in timers.items():
        fastest = min(timer.timeit(1).median for _ in range(warm))  # lazy init, allocator, caches
        numbers[k] = max(1, min(max_number, math.ceil(min_block_s / max(fastest, 1e-9))))
    blocks: dict[str, list[Measurement]] = {k: [] for k in fns}
    names = list(fns)
    r = 0
    while r < rounds or (r < max_rounds and any(_rel_iqr([b.median for b in blocks[k]]) > target_rel_iqr
                                               for k in names)):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            blocks[k].append(timers[k].timeit(numbers[k]))
        r += 1
    out = {}
    for k in names:
        (merged,) = Measurement.merge(blocks[k])
        out[k] = Timing(label=k, times=list(merged.times), number=numbers[k], threads=threads, warmup=warm,
                        measurement=merged)
    return out


def _rel_iqr(xs: list[float]) -> float:
    med = _quantile(xs, 0.5)
    return (_quantile(xs, 0.75) - _quantile(xs, 0.25)) / med if med > 0 else math.inf
