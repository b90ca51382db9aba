"""Records: one JSON object per measurement, appended and fsynced at once so nothing measured is ever lost.

Why JSON lines: an interrupted run (Ctrl-C, a crash, a killed CI job, a full disk) leaves every record written so far
intact and readable; at worst the last line is torn, the next record starts on a fresh line, and ``read_records``
skips the fragment with a warning. Folders are reused (reruns after a kill): merging only adds, and ``latest`` keeps
one record per measurement. docs/reliability.md lists every fault and what is kept.
"""
from __future__ import annotations

import contextlib
import json
import math
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
# Training-log fields that are timings or this process's memory, not results.
VOLATILE_TRAIN_FIELDS = ("wall_s", "tokens_per_s", "cached", "step_time_s", "peak_memory", "eval_wall_s")
# A metric with one of these words in its name is a timing too (inference_s_per_batch, …_per_s_iqr, …_repeats).
VOLATILE_METRIC_WORDS = frozenset({"s", "ms", "us", "repeats"})


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
    gate: dict[str, Any] | None = None  # the regression gate's verdict against --baseline (harness/results/gate.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RecordWriter:
    """Appends records to one file; each write is one ``os.write`` of a whole line, fsynced before returning.

    Why so careful: the file is the only copy of a measurement. A record always starts on a fresh line (a torn last
    line left by a kill or a full disk stays a lone fragment the reader skips, instead of swallowing the next
    record), values are strict JSON (non-finite floats become null: the finaliser already gave such a record its
    status), and a write that fails half-way is cut back so the file ends where the last complete record ended.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Record | dict[str, Any]) -> None:
        data = record.to_dict() if isinstance(record, Record) else record
        append_lines(self.path, [dumps(data)])


def dumps(data: dict[str, Any]) -> str:
    """One record as one line of strict JSON (``allow_nan=False``; NaN and infinities are written as null)."""
    return json.dumps(strict(data), sort_keys=True, allow_nan=False)


def strict(obj: Any) -> Any:
    """``obj`` with every value JSON can hold exactly: non-finite floats → None, numpy/torch scalars → Python
    numbers, tuples and sets → lists, paths and anything else → str."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [strict(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return strict(obj.item())
        except (TypeError, ValueError, RuntimeError):  # an array or tensor of several values
            pass
    return str(obj)


def append_lines(path: Path, lines: Iterable[str]) -> None:
    """Append ``lines`` (no newlines inside) to ``path`` in one write, fsynced, starting on a fresh line.

    On failure (a full disk) the file is truncated back to its previous size, then the ``OSError`` is raised."""
    blob = "".join(line + "\n" for line in lines).encode("utf-8")
    if not blob:
        return
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            blob = b"\n" + blob  # the last line is torn: leave it alone on its own line
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def read_records(path: Path) -> list[dict[str, Any]]:
    """All complete records of a file. A line that is not one (a torn last line of a killed writer, a line that is
    not UTF-8, JSON that is not an object) is skipped with a warning naming the file and the line."""
    out: list[dict[str, Any]] = []
    path = Path(path)
    if not path.exists():
        return out
    for i, raw in enumerate(path.read_bytes().split(b"\n")):
        if not raw.strip():
            continue
        where = f"{path}:{i + 1}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            warnings.warn(f"{where}: skipped a line that is not UTF-8 (byte {exc.start}): not a record",
                          stacklevel=2)
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{where}: skipped an incomplete record (interrupted write)", stacklevel=2)
            continue
        if not isinstance(data, dict):
            warnings.warn(f"{where}: skipped a line that is JSON but not a record object ({type(data).__name__})",
                          stacklevel=2)
            continue
        out.append(data)
    return out


def worker_file(results_dir: Path, worker: str) -> Path:
    return Path(results_dir) / f"records.{worker}.jsonl"


def worker_files(results_dir: Path) -> list[Path]:
    """``records.<worker>.jsonl`` of every xdist worker that ever wrote into ``results_dir``."""
    return sorted(p for p in Path(results_dir).glob("records.*.jsonl") if p.name != RECORDS_FILE)


def merge_worker_files(results_dir: Path) -> list[dict[str, Any]]:
    """Add the records of ``records.<worker>.jsonl`` (xdist workers) that ``records.jsonl`` lacks to it; return
    every record of the folder, sorted by test id.

    Merging only ever adds: ``records.jsonl`` is appended to, never rewritten, so records of earlier runs into the
    same folder (serial runs, crash records) stay as they were; worker files are kept. A file lock makes two
    sessions ending at once add each record once.
    """
    from filelock import FileLock

    results_dir = Path(results_dir)
    main = results_dir / RECORDS_FILE
    with FileLock(str(results_dir / f".{RECORDS_FILE}.lock")):
        have = read_records(main)
        seen = {dumps(r) for r in have}
        new: list[dict[str, Any]] = []
        for f in worker_files(results_dir):
            for rec in read_records(f):
                line = dumps(rec)
                if line not in seen:
                    seen.add(line)
                    new.append(rec)
        new.sort(key=sort_key)
        append_lines(main, [dumps(r) for r in new])
    return sorted(have + new, key=sort_key)


def read_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every record of a results folder: ``records.jsonl`` and the worker files (a controller killed before it
    merged them leaves records only there), each record once."""
    results_dir = Path(results_dir)
    out, seen = [], set()
    for f in [results_dir / RECORDS_FILE, *worker_files(results_dir)]:
        for rec in read_records(f):
            line = dumps(rec)
            if line not in seen:
                seen.add(line)
                out.append(rec)
    return out


def latest(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest record of each measurement (same ``cell_id`` and test id), sorted by test id.

    A results folder reused by a rerun (after a kill, a crash, a fix) holds several records of one cell; summaries
    and statistics must count each cell once, with its latest outcome. Ties in time keep the later one read."""
    best: dict[tuple, tuple[tuple, dict[str, Any]]] = {}
    for i, rec in enumerate(records):
        key = (rec.get("cell_id"), rec.get("test_id"))
        rank = (rec.get("finished_at") or rec.get("started_at") or "", i)
        if key not in best or rank >= best[key][0]:
            best[key] = (rank, rec)
    return sorted((rec for _, rec in best.values()), key=sort_key)


def writable_reason(folder: Path) -> str | None:
    """None if records can be written into ``folder`` (created later if absent), else why not (one line).

    Nothing is created: the folder itself if it exists, else its nearest existing parent, gets a probe file
    (written, fsynced and removed), so a read-only folder, a path through a file or a full disk is found before
    anything is trained."""
    folder = Path(folder)
    probe_dir = folder
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        what = "is a file" if probe_dir == folder else f"cannot be created: {probe_dir} is a file"
        return f"{folder} {what}"
    probe = probe_dir / f".lmbench-write-probe.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        where = "" if probe_dir == folder else f" (cannot create it in {probe_dir})"
        return f"{folder} is not writable{where}: {exc.strerror or exc}"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return None


def sort_key(rec: dict[str, Any]) -> tuple:
    return (rec.get("test_id") or "", rec.get("benchmark") or "", str(rec.get("seed")))


def comparable(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields that differ between equivalent runs (timings, ids, environment)."""
    out = {k: v for k, v in rec.items() if k not in VOLATILE_FIELDS}
    out["metrics"] = {
        k: v for k, v in (rec.get("metrics") or {}).items()
        if not k.endswith(VOLATILE_METRIC_SUFFIXES) and not VOLATILE_METRIC_WORDS & set(k.split("_"))
    }
    if out.get("train"):
        out["train"] = {k: v for k, v in out["train"].items() if k not in VOLATILE_TRAIN_FIELDS}
    return out


def count_by_status(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.get("status", "unknown")] = counts.get(r.get("status", "unknown"), 0) + 1
    return counts
