"""Baselines: the stored numbers a run is gated against (``--baseline PATH``), one JSON file, schema-versioned.

    {"schema": "lmbench-baseline", "schema_version": 1,
     "meta":  {"created_at", "command", "run_ids", "git_commit", "environment"},
     "gate":  {"<benchmark>": {"<budget>": {"<metric>": {"direction", "tolerance", "kind", "where"}}}},
     "cells": {"<cell_id>": {"benchmark", "group_id", "seed", "budget", "metrics": {...}, "protocol": {...},
                             "source": {"run_id", "git_commit", "test_id"}}}}

Why keyed by cell id: the cell id names every axis, device type included, so a baseline measured on a CPU is never
compared with a CUDA run (those cells are simply new), and seed i is compared with seed i. The seeds of a group are
the cells sharing a ``group_id`` (the cell id without its seed): the per-group samples the significance tests use.
``gate`` is a snapshot of the rules at the time of writing (where each tolerance came from); the live targets files
decide. Files are written atomically; a missing, corrupt or foreign file is a ``BaselineError`` — one line that
names the file and the fix.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.cells import group_of
from harness.files import atomic_write
from harness.results.gate import RAW_SPEED_SUFFIXES, GateConfig
from harness.results.records import RECORDS_FILE, read_records

SCHEMA = "lmbench-baseline"
SCHEMA_VERSION = 1


class BaselineError(ValueError):
    """A baseline (or results folder) that cannot be used; the message is one line naming the file and the fix."""


@dataclass
class BaselineCell:
    cell_id: str
    benchmark: str
    group_id: str
    seed: int | None
    budget: str | None
    metrics: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)  # the keys the gate's match_protocol names
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cell_id")
        return d


@dataclass
class Baseline:
    cells: dict[str, BaselineCell] = field(default_factory=dict)
    gate: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        """The file as users know it (relative to the repository when it lives there)."""
        return shown(self.path) if self.path else "(baseline)"

    def get(self, cell_id: str) -> BaselineCell | None:
        return self.cells.get(cell_id)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "meta": self.meta, "gate": self.gate,
                "cells": {cid: self.cells[cid].to_dict() for cid in sorted(self.cells)}}


def shown(path: Path | str) -> str:
    from harness.env import REPO_ROOT

    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------- reading


def load_baseline(path: str | Path, option: str = "--baseline") -> Baseline:
    """Read and check a baseline file; ``BaselineError`` (one line, naming the fix) for anything unusable."""
    path = Path(path)
    fix = (f"write one with `pytest benches … {option} {shown(path)} --update-baseline`" if option.startswith("--")
           else "give a baseline file written by --update-baseline, or a results folder")
    if path.is_dir():
        raise BaselineError(f"{option} {shown(path)} is a folder; give the baseline JSON file ({fix})")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(f"{option} {shown(path)}: no such file; {fix}, or check the path") from None
    except OSError as exc:
        raise BaselineError(f"{option} {shown(path)} cannot be read ({exc.strerror}); check its permissions") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{option} {shown(path)} is not valid JSON ({exc.msg} at line {exc.lineno}); restore it "
                            f"with `git checkout -- {shown(path)}` or {fix}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BaselineError(f"{option} {shown(path)} is not an lmbench baseline (no \"schema\": \"{SCHEMA}\"); "
                            f"{fix}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise BaselineError(f"{option} {shown(path)} has baseline schema version {data.get('schema_version')!r}; "
                            f"this lmbench reads version {SCHEMA_VERSION}: {fix}")
    cells: dict[str, BaselineCell] = {}
    raw_cells = data.get("cells")
    if not isinstance(raw_cells, dict):
        raise BaselineError(f"{option} {shown(path)}: \"cells\" must be an object of cell id → entry; {fix}")
    for cid, entry in raw_cells.items():
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, dict) or not all(_is_number(v) for v in metrics.values()):
            raise BaselineError(f"{option} {shown(path)}: cell {cid!r} needs \"metrics\" of finite numbers; {fix}")
        cells[cid] = BaselineCell(cell_id=cid, benchmark=entry.get("benchmark") or cid.split("|", 1)[0].split("/")[0],
                                  group_id=entry.get("group_id") or group_of(cid), seed=entry.get("seed"),
                                  budget=entry.get("budget"), metrics={k: float(v) for k, v in metrics.items()},
                                  protocol=dict(entry.get("protocol") or {}), source=dict(entry.get("source") or {}))
    return Baseline(cells=cells, gate=data.get("gate") or {}, meta=data.get("meta") or {}, path=path)


def load_side(path: str | Path, label: str,
              config_for: Callable[[str, str | None], GateConfig] | None = None) -> Baseline:
    """One side of ``harness compare``: a baseline file, or a results folder (its passed records)."""
    path = Path(path)
    if path.is_dir():
        records_file = path / RECORDS_FILE
        if not records_file.is_file():
            raise BaselineError(f"{label} {shown(path)} has no {RECORDS_FILE}; give a results folder "
                                "(reports/results/<run-id>) or a baseline JSON file")
        base = from_records(read_records(records_file), config_for, meta={"results_dir": str(path)})
        if not base.cells:
            raise BaselineError(f"{label} {shown(path)}: no passed records with numeric metrics to compare")
        base.path = path
        return base
    return load_baseline(path, option=label)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------------------------------- writing


def stored_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics a baseline keeps: finite numbers that do not depend on the machine's speed."""
    return {k: float(v) for k, v in (metrics or {}).items() if _is_number(v) and not k.endswith(RAW_SPEED_SUFFIXES)
            and not k.startswith(("tokens_per_s", "ns_per_token"))}


def from_records(records: Iterable[dict[str, Any]],
                 config_for: Callable[[str, str | None], GateConfig] | None = None,
                 meta: dict[str, Any] | None = None) -> Baseline:
    """A baseline of the passed records (the latest record per cell wins). ``config_for(benchmark, budget)`` gives
    the gate rules whose protocol keys and snapshot go into the file."""
    cells: dict[str, BaselineCell] = {}
    gate: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        cid = r.get("cell_id")
        if r.get("status") != "passed" or not cid:
            continue
        metrics = stored_metrics(r.get("metrics") or {})
        if not metrics:
            continue
        bench, budget = r.get("benchmark") or cid.split("|", 1)[0], r.get("budget")
        config = config_for(bench, budget) if config_for else GateConfig()
        if config.rules:
            gate.setdefault(bench, {})[str(budget)] = {m: {k: v for k, v in rule.to_dict().items() if k != "metric"}
                                                        for m, rule in config.rules.items()}
        env = r.get("environment") or {}
        cells[cid] = BaselineCell(
            cell_id=cid, benchmark=bench, group_id=group_of(cid), seed=r.get("seed"), budget=budget, metrics=metrics,
            protocol=config.protocol_of(r.get("protocol")),
            source={"run_id": r.get("run_id"), "git_commit": env.get("git_commit"), "test_id": r.get("test_id"),
                    "cpu": env.get("cpu"), "torch": env.get("torch"), "threads": env.get("torch_threads")})
    return Baseline(cells=cells, gate=gate, meta=dict(meta or {}))


def updated(old: Baseline | None, new: Baseline) -> Baseline:
    """``old`` with every cell of ``new`` replaced or added (cells this run did not measure are kept)."""
    if old is None:
        return new
    cells = dict(old.cells) | new.cells
    gate = {b: dict(old.gate.get(b, {})) | new.gate.get(b, {}) for b in set(old.gate) | set(new.gate)}
    return Baseline(cells=cells, gate=gate, meta=new.meta, path=old.path)


def write_baseline(baseline: Baseline, path: str | Path) -> Path:
    path = Path(path)
    baseline.meta["written_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write(path, json.dumps(baseline.to_json(), indent=1, sort_keys=True, allow_nan=False) + "\n")
    baseline.path = path
    return path
