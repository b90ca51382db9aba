"""Versioned target files (``fixtures/targets/<benchmark>.toml``): thresholds live in data, not in test bodies.

A file has a ``version`` and sections. A section is chosen by the result (its ``target_section``, else the cell's
dataset) with ``[default]`` as the fallback, key by key. Keys ``max_<metric>`` / ``min_<metric>`` are checks; a
value is a number or a table per budget (``{ smoke = 1.5, small = 1.05 }``). A section may override keys per model
in a sub-table ``[<section>.model.<name>]``. A check applies when its metric is in the result and its value is
defined for the budget.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

OPS = {"max": "<=", "min": ">="}


class TargetsError(ValueError):
    pass


@dataclass(frozen=True)
class Check:
    metric: str
    op: str  # "max" | "min"
    limit: float
    where: str  # "fixtures/targets/perplexity.toml [synthetic-markov] max_ppl_over_floor"

    def holds(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return value <= self.limit if self.op == "max" else value >= self.limit

    def failure(self, value: float, subject: str) -> str:
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
        want = f"{OPS[self.op]} {self.limit:g}"
        return f"{subject}: {self.metric} = {shown}, target {want} ({self.where})"


@lru_cache(maxsize=None)
def load_targets(name: str, directory: Path) -> dict[str, Any]:
    path = Path(directory) / f"{name}.toml"
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise TargetsError(f"no target file {path}; create it (see docs/architecture.md)") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetsError(f"target file {path} is not valid TOML ({exc}); fix or restore it from git") from None
    if "version" not in data:
        raise TargetsError(f"target file {path} has no 'version' key; add 'version = 1'")
    return data


def targets_path(name: str, directory: Path) -> Path:
    return Path(directory) / f"{name}.toml"


def _value(raw: Any, budget: str | None) -> float | None:
    if isinstance(raw, dict):
        raw = raw.get(budget) if budget is not None else None
    return float(raw) if isinstance(raw, (int, float)) else None


def recorded_hints(targets: dict[str, Any], section: str | None) -> tuple[str | None, tuple[str, ...]]:
    """The status hints a section lists under ``record_hints`` (falling back to ``[default]``): those are results
    to record (the test is an expected failure), not failures. Returns (the section that said so, the hints)."""
    for name in dict.fromkeys(s for s in (section, "default") if s):
        table = targets.get(name)
        if isinstance(table, dict) and "record_hints" in table:
            return name, tuple(table["record_hints"])
    return None, ()


def checks_for(targets: dict[str, Any], where: str, section: str | None, budget: str | None,
               model: str | None, metrics: dict[str, Any]) -> list[Check]:
    """Every check that applies to these metrics: the first of [section.model.<model>], [section], [default]
    that defines a key wins for that key."""
    tables: list[tuple[str, dict[str, Any]]] = []
    for name in dict.fromkeys(s for s in (section, "default") if s):
        table = targets.get(name)
        if not isinstance(table, dict):
            continue
        per_model = (table.get("model") or {}).get(model) if model else None
        if isinstance(per_model, dict):
            tables.append((f"{name}.model.{model}", per_model))
        tables.append((name, table))
    checks: dict[str, Check] = {}
    for name, table in tables:
        for key, raw in table.items():
            op, _, metric = key.partition("_")
            if op not in OPS or key in checks or metric not in metrics:
                continue
            limit = _value(raw, budget)
            if limit is not None:
                checks[key] = Check(metric, op, limit, f"{where} [{name}] {key}")
    return list(checks.values())
