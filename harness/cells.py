"""One measurement = one cell: a frozen point of the benchmark grid (model × dataset × seed × bits × seq_len …).

Why a value object: the same cell must mean the same measurement everywhere — in a pytest item, in a record, in a
baseline, in a resumed run, on another machine. ``cell_id`` is that identity (stable text, no hashes, so a person
can read a baseline); ``train_key`` is the part of it that determines trained weights, so cells differing only in
how they are measured (bits, evaluation) share one training run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

# Axes a benchmark can vary over, in the order they appear in ids, and the option each comes from.
AXES = ("model", "dataset", "seed", "seq_len", "bits")
DEFAULT_AXES = ("model", "dataset", "seed", "seq_len")


@dataclass(frozen=True)
class Cell:
    benchmark: str
    model: str | None = None
    dataset: str | None = None
    tokenizer: str | None = None
    seed: int | None = None
    budget: str | None = None
    seq_len: int | None = None
    bits: str | None = None
    device: str = "cpu"  # a device *type* ("cpu", "cuda"): which GPU index ran it is in the record, not the id
    params: tuple[tuple[str, Any], ...] = ()  # other test parameters (sorted), e.g. (("mode", "causal"),)
    measure: str | None = None  # which measurement of the benchmark, when it has several (a test function)

    @property
    def train_key(self) -> tuple | None:
        """What determines trained weights (None for cells without a model to train)."""
        if self.model is None or self.dataset is None:
            return None
        return (self.model, self.dataset, self.tokenizer, self.seed, self.budget, self.seq_len, self.device)

    @property
    def train_group(self) -> str | None:
        """``train_key`` as readable text: the name under which launchers keep cells sharing weights together (one
        xdist worker trains them and the others reuse them from memory; Ray runs them after the first)."""
        key = self.train_key
        return None if key is None else "train:" + "/".join(str(v) for v in key)

    def _fields(self, skip: Iterable[str] = ()) -> list[tuple[str, Any]]:
        names = ("model", "dataset", "tokenizer", "seed", "budget", "seq_len", "bits", "device")
        out = [(n, getattr(self, n)) for n in names if n not in skip and getattr(self, n) is not None]
        return out + [(k, v) for k, v in self.params if k not in skip]

    @property
    def name(self) -> str:
        """``benchmark`` or ``benchmark/measure``."""
        return f"{self.benchmark}/{self.measure}" if self.measure else self.benchmark

    @property
    def cell_id(self) -> str:
        """Stable identity: ``perplexity|model=transformer|dataset=…|seed=0|…`` (fields that are None omitted)."""
        return "|".join([self.name] + [f"{k}={v}" for k, v in self._fields()])

    @property
    def group_id(self) -> str:
        """The cell without its seed: what statistics over seeds aggregate."""
        return "|".join([self.name] + [f"{k}={v}" for k, v in self._fields(skip=("seed",))])

    def label(self, axes: Iterable[str]) -> str:
        """A short pytest id from the varying axes: ``transformer-synthetic-markov-s0-L128``."""
        parts = []
        params = dict(self.params)
        for axis in axes:
            value = getattr(self, axis) if axis in AXES else params.get(axis)
            parts.append({"seed": f"s{value}", "seq_len": f"L{value}"}.get(axis, str(value)))
        return "-".join(parts)

    def replace(self, **changes: Any) -> "Cell":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["params"] = dict(self.params)
        return d


def group_of(cell_id: str) -> str:
    """The group id of a cell id (the cell without its seed), for records and baselines that carry only the text."""
    return "|".join(p for p in cell_id.split("|") if not p.startswith("seed="))


def without_axes(cell_id: str, *axes: str) -> str:
    """A cell id with the named axes removed, e.g. what models are compared across (``without_axes(id, "model",
    "seed")``)."""
    prefixes = tuple(f"{a}=" for a in axes)
    return "|".join(p for p in cell_id.split("|") if not p.startswith(prefixes))
