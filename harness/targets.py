"""Versioned target files (``fixtures/targets/<name>.toml``): thresholds live in data, not in test bodies."""
from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

TARGETS_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "targets"


class TargetsError(ValueError):
    pass


@lru_cache(maxsize=None)
def load_targets(name: str, directory: Path | None = None) -> dict[str, Any]:
    path = (directory or TARGETS_DIR) / f"{name}.toml"
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


def lookup(targets: dict[str, Any], section: str, key: str, budget: str) -> Any | None:
    """``targets[section][key]`` (falling back to ``[default]``), where a value may be a per-budget table."""
    for sec in (section, "default"):
        value = targets.get(sec, {}).get(key)
        if value is None:
            continue
        if isinstance(value, dict):
            return value.get(budget)
        return value
    return None
