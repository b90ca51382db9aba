"""Records: one JSON object per measurement, appended and fsynced at once so nothing measured is ever lost.

Why JSON lines: an interrupted run (Ctrl-C, a crash, a killed CI job) leaves every record written so far intact
and readable; at worst the last line is truncated, and ``read_records`` skips it with a warning.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 2  # v2: cell_id; protocol carries the train and eval configs separately
RECORDS_FILE = "records.jsonl"

# Fields that legitimately differ between two runs of the same measurements (used to compare runs).
VOLATILE_FIELDS = ("run_id", "started_at", "finished_at", "duration_s", "environment", "worker")
VOLATILE_METRIC_SUFFIXES = ("_s", "_per_s", "_ms")


STATUSES = ("passed", "failed", "leak", "diverged", "nonfinite", "impossible", "oom", "timeout", "skipped", "xfailed", "xpassed",
            "error")


@dataclass
class Record:
    benchmark: str
    test_id: str
    cell_id: str | None = None
    model: str | None = None
    dataset: str | None = None
    tokenizer: str | None = None
    bits: str | None = None
    seq_len: int | None = None
    seed: int | None = None
    budget: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    params: dict[str, int] = field(default_factory=dict)
    status: str = "unknown"  # one of STATUSES
    reason: str | None = None
    leak: bool | None = None
    train: dict[str, Any] | None = None
    notes: str | None = None
    artefacts: dict[str, str] = field(default_factory=dict)  # name -> path (plots, per-example files)
    environment: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    worker: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RecordWriter:
    """Appends records to one file; each write is flushed and fsynced before returning."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Record | dict[str, Any]) -> None:
        data = record.to_dict() if isinstance(record, Record) else record
        line = json.dumps(data, sort_keys=True, default=_json_default, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def read_records(path: Path) -> list[dict[str, Any]]:
    """All complete records of a file; a truncated last line (a killed writer) is skipped with a warning."""
    out: list[dict[str, Any]] = []
    path = Path(path)
    if not path.exists():
        return out
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{i + 1}: skipped an incomplete record (interrupted write)", stacklevel=2)
    return out


def worker_file(results_dir: Path, worker: str) -> Path:
    return Path(results_dir) / f"records.{worker}.jsonl"


def merge_worker_files(results_dir: Path) -> list[dict[str, Any]]:
    """Merge ``records.<worker>.jsonl`` (xdist workers) into ``records.jsonl``, sorted by test id.

    The worker files are kept, and the merged file is replaced atomically: an interrupted merge loses nothing.
    """
    results_dir = Path(results_dir)
    merged: list[dict[str, Any]] = []
    for f in sorted(results_dir.glob("records.*.jsonl")):
        merged.extend(read_records(f))
    merged.sort(key=sort_key)
    tmp = results_dir / (RECORDS_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in merged:
            f.write(json.dumps(rec, sort_keys=True, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, results_dir / RECORDS_FILE)
    return merged


def sort_key(rec: dict[str, Any]) -> tuple:
    return (rec.get("test_id") or "", rec.get("benchmark") or "", str(rec.get("seed")))


def comparable(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields that differ between equivalent runs (timings, ids, environment)."""
    out = {k: v for k, v in rec.items() if k not in VOLATILE_FIELDS}
    out["metrics"] = {
        k: v for k, v in (rec.get("metrics") or {}).items() if not k.endswith(VOLATILE_METRIC_SUFFIXES)
    }
    if out.get("train"):
        out["train"] = {k: v for k, v in out["train"].items() if k not in ("wall_s", "tokens_per_s", "cached")}
    return out


def count_by_status(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.get("status", "unknown")] = counts.get(r.get("status", "unknown"), 0) + 1
    return counts
