"""Resumable runs: ``run.json`` says which cells a run planned; ``--resume DIR`` reruns those without a final record.

Why a plan file: a run killed at hour 30 has records for some cells and none for others, and only the run itself
knew which cells it meant to measure (its options, its test selection). ``run.json`` is written once the run has
collected its tests: the run id, the options as typed and the ``cell_id`` of every benchmark cell. A resumed run
restores the options that define cells (so ``pytest benches --resume DIR`` collects the same cells), deselects every
collected test that is not in the plan or already has a final record, and appends to the same records files; the
summary then covers the whole run, one record per cell (the latest).

Matching is by ``cell_id`` (the stable identity of a measurement), never by pytest node id.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from harness.options import OptionsError
from harness.results.records import latest, read_results

RUN_FILE = "run.json"
# Options that decide which cells exist and how they are judged: a resumed run keeps the run's values.
IDENTITY_OPTIONS = ("models", "datasets", "tokenizer", "seeds", "bits", "seq_lens", "budget", "device", "gpu",
                    "targets_dir", "group_size", "act_bits", "quant_include", "tasks", "limit",
                    "memory_tasks", "grad_checkpoint", "autocast")
# Statuses --resume-failed reruns: the run did not get a usable measurement (a crash, a miss, a refusal).
RERUN_WITH_FAILED = frozenset({"failed", "error", "leak", "diverged", "nonfinite", "impossible", "oom", "timeout"})


def write_plan(results_dir: Path, run_id: str, raw_options: dict[str, Any], device_type: str,
               cells: Iterable[tuple[str, str]], command: list[str]) -> Path:
    """Write ``run.json`` atomically: what a later ``--resume`` needs to finish this run."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    plan = {
        "run_id": run_id,
        "command": command,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in raw_options.items()},
        "device_type": device_type,
        "cells": {cell_id: test_id for cell_id, test_id in cells},
    }
    path = results_dir / RUN_FILE
    tmp = path.with_name(f"{RUN_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(plan, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def load_plan(results_dir: str | os.PathLike) -> dict[str, Any]:
    """The plan of the run in ``results_dir``; ``OptionsError`` (one line naming the fix) when there is none."""
    folder = Path(results_dir).expanduser()
    if not folder.is_dir():
        raise OptionsError(f"--resume {results_dir}: no such folder; give the results folder of the run to resume "
                           "(reports/results/<run-id>, or its --results-dir)")
    path = folder / RUN_FILE
    if not path.is_file():
        hint = ("it has records but no run.json (the run predates --resume, or never finished collecting): "
                "start the run again" if any(folder.glob("records*.jsonl")) else
                "it is not an lmbench results folder (no run.json, no records)")
        raise OptionsError(f"--resume {results_dir}: {hint}")
    try:
        plan = json.loads(path.read_text())
        _ = plan["run_id"], plan["options"], plan["cells"]
    except (ValueError, KeyError, TypeError):
        raise OptionsError(f"--resume {results_dir}: {path} is unreadable; start the run again") from None
    return plan


def restore_options(raw: dict[str, Any], defaults: dict[str, Any], plan: dict[str, Any],
                    results_dir: str | os.PathLike) -> dict[str, Any]:
    """The options of a resumed run: the plan's values for options that define cells, this command's for the rest
    (data and cache folders, launcher). An identity option given here with another value is an error."""
    out = dict(raw)
    stored = plan["options"]
    for name in IDENTITY_OPTIONS:
        mine, theirs = raw.get(name), stored.get(name, defaults.get(name))
        if name == "device":
            theirs = plan.get("device_type", theirs)  # the device the run resolved "auto" to
        if mine != defaults.get(name) and mine != theirs and not (name == "device" and mine == "auto"):
            flag = "--" + name.replace("_", "-")
            raise OptionsError(f"--resume: {flag} {mine} differs from the run's {flag} {theirs}; drop it "
                               "(a resumed run keeps the options that define its cells)")
        out[name] = theirs
    given = raw.get("results_dir")
    if given and Path(given).expanduser().resolve() != Path(results_dir).expanduser().resolve():
        raise OptionsError(f"--results-dir {given} and --resume {results_dir} disagree: a resumed run appends to "
                           "its own folder; drop --results-dir")
    out["results_dir"] = str(results_dir)
    return out


def run_records(results_dir: Path) -> list[dict[str, Any]]:
    """Every complete record of a run folder: ``records.jsonl`` and the worker files (a run killed before merging
    has only those), each record once."""
    return read_results(results_dir)


def cells_done(records: Iterable[dict[str, Any]], rerun_failed: bool) -> dict[str, str]:
    """``cell_id`` -> status of the cells not to run again: every cell with a record, or with ``rerun_failed``
    every cell with a record that is not a failure."""
    done: dict[str, str] = {}
    for rec in records:
        cid, status = rec.get("cell_id"), rec.get("status", "unknown")
        if cid and not (rerun_failed and status in RERUN_WITH_FAILED):
            done[cid] = status
    return done


def final_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per cell: its latest (a resumed run may have rerun a failed cell)."""
    return latest(records)
