"""``python -m harness baseline RESULTS_DIR FILE``: promote a finished run to a baseline (its passed cells replace
theirs in FILE; other cells are kept), without re-running it — the same as that run with ``--update-baseline``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.options import TARGETS_DIR
from harness.results.baseline import BaselineError, from_records, load_baseline, updated, write_baseline
from harness.results.gate import gate_for
from harness.results.records import RECORDS_FILE, latest, read_results
from harness.results.targets import TargetsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness baseline", description=__doc__)
    parser.add_argument("results_dir")
    parser.add_argument("file")
    parser.add_argument("--targets-dir", default=str(TARGETS_DIR))
    args = parser.parse_args(argv)
    results, path = Path(args.results_dir), Path(args.file)
    records = latest(read_results(results))  # the latest record of each cell, worker files included
    if not records:
        print(f"harness baseline: no records in {results / RECORDS_FILE}; give a results folder", file=sys.stderr)
        return 2
    try:
        old = load_baseline(path, option="FILE") if path.exists() else None
    except BaselineError as exc:
        print(f"harness baseline: {exc}", file=sys.stderr)
        return 2
    summary = {}
    try:
        import json

        summary = json.loads((results / "summary.json").read_text())
    except (OSError, ValueError):
        pass
    env = next((r.get("environment") for r in records if r.get("environment")), {}) or {}
    try:
        new = from_records(records, lambda bench, budget: gate_for(bench, budget, Path(args.targets_dir)),
                           meta={"command": summary.get("command"), "run_id": records[0].get("run_id"),
                                 "git_commit": env.get("git_commit"),
                                 "environment": {k: env.get(k) for k in ("python", "torch", "cpu", "gpu", "device",
                                                                         "torch_threads", "platform")}})
    except TargetsError as exc:
        print(f"harness baseline: {exc}", file=sys.stderr)
        return 2
    if not new.cells:
        print(f"harness baseline: no passed records with numeric metrics in {results / RECORDS_FILE}; nothing to "
              "write (a baseline holds only passed cells)", file=sys.stderr)
        return 2
    base = updated(old, new)
    write_baseline(base, path)
    print(f"baseline written: {path} ({len(new.cells)} cells from {results}, {len(base.cells)} in the file)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
