"""End-of-run summaries of a results folder: ``summary.json`` (machine-readable), ``summary.md`` (tables to paste),
``summary.html`` (one self-contained page with every table and plot), all from the same analysis, written atomically.

``python -m harness.reporting.summary DIR`` (or ``python -m harness summary DIR``) rebuilds them from any results
folder, e.g. one whose run was killed.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from harness.files import atomic_write
from harness.options import TARGETS_DIR
from harness.reporting import html as html_report
from harness.reporting import markdown
from harness.reporting.analysis import RunReport, analyse
from harness.reporting.plots import benchmark_plots, record_images, registered_plots
from harness.results.records import count_by_status, strict

# Axes every table shows and every statistic groups by (the seed aside).
GROUP_AXES = ("benchmark", "model", "dataset", "tokenizer", "budget", "seq_len", "bits")
SUMMARY_FILES = ("summary.json", "summary.md", "summary.html")
REGISTERED = "plot: "  # caption prefix of a figure a benchmark registered with @plotter


def group_key(record: dict[str, Any]) -> str:
    """Every axis of a record's cell but its seed (the cell id without ``seed=``, or the axes of an older record)."""
    from harness.cells import group_of

    cell_id = record.get("cell_id")
    if cell_id:
        return group_of(cell_id)
    return "|".join(f"{a}={record.get(a)}" for a in GROUP_AXES)


def aggregate_seeds(records: Iterable[dict[str, Any]], metrics: tuple[str, ...] = ("ppl", "bits_per_byte", "word_ppl",
                    "ppl_over_floor")) -> list[dict[str, Any]]:
    """Mean, sample std (numpy) and a 95% Student-t interval (scipy.stats) over seeds, per cell without its seed.
    Kept for callers of the first summary API; reports use ``harness.reporting.analysis``."""
    from scipy import stats

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "passed" and r.get("seed") is not None:
            groups.setdefault(group_key(r), []).append(r)
    out = []
    for rs in groups.values():
        row: dict[str, Any] = {a: rs[0].get(a) for a in GROUP_AXES} | {"n_seeds": len(rs)}
        for m in metrics:
            vals = [r["metrics"][m] for r in rs if isinstance((r.get("metrics") or {}).get(m), (int, float))]
            if len(vals) < 2:
                continue
            mean, sd = float(np.mean(vals)), float(np.std(vals, ddof=1))
            half = float(stats.t.ppf(0.975, len(vals) - 1) * sd / math.sqrt(len(vals)))
            row[m] = {"mean": mean, "std": sd, "ci95": [mean - half, mean + half]}
        out.append(row)
    return out


def build_summary(rep: RunReport, options: dict[str, Any]) -> dict[str, Any]:
    records = rep.records
    return {
        "run_id": rep.run_id,
        "command": rep.command,
        "options": options,
        "counts": count_by_status(records),
        "n_records": len(records),
        "environment": rep.environment,
        "benchmarks": {
            b.name: {
                "headline": list(b.spec.headline), "compare": list(b.spec.compare), "reference": b.spec.reference,
                "directions": b.spec.directions,
                "groups": [{"group_id": g.group_id, "label": g.label, **{a: g.axes.get(a) for a in g.axes},
                            "extra": g.extra, "seeds": g.seeds, "statuses": dict(g.statuses), "params": g.params,
                            "train_tokens": g.train_tokens,
                            "stats": {m: s.to_dict() for m, s in g.stats.items()}} for g in b.groups],
                "comparisons": [c.to_dict() for c in b.comparisons],
            } for b in rep.benchmarks
        },
        "skipped": [{"reason": reason, "count": n, "benchmarks": benches} for reason, n, benches in rep.skipped],
        "gate": {"baseline": rep.baseline, "counts": rep.gate_counts,
                 "cells": {c.cell_id: c.to_dict() for c in rep.gate_cells},
                 "groups": [g.to_dict() for g in rep.gate_groups]} if rep.gate_cells else None,
        "records": [
            {k: r.get(k) for k in ("test_id", "cell_id", *GROUP_AXES, "seed", "status", "reason", "leak")}
            | {"metrics": r.get("metrics", {}), "params": r.get("params") or {},
               "train_tokens": (r.get("train") or {}).get("tokens")}
            for r in records
        ],
    }


def write_summary(results_dir: Path, records: list[dict[str, Any]], run_id: str | None, options: dict,
                  command: str | None = None, targets_dir: Path | None = None, plots: bool = True) -> RunReport:
    """Write the three summaries of ``records`` into ``results_dir`` (plots under ``plots/``); returns the analysis
    the terminal summary prints from."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    targets_dir = Path(targets_dir or options.get("targets_dir") or TARGETS_DIR)
    if command is None:  # a rebuild keeps the command of the run that made the folder
        command = _previous(results_dir).get("command")
    rep = analyse(records, targets_dir, run_id=run_id, command=command, options=options)
    figures = _figures(rep, records, results_dir) if plots else {}
    summary = build_summary(rep, options)
    # "plots": the benchmarks' own cross-cell figures (@plotter), "figures": every figure, by benchmark and caption.
    summary["plots"] = [str(p.relative_to(results_dir)) for b in sorted(figures) for c, p in figures[b].items()
                        if c.startswith(REGISTERED)]
    summary["figures"] = {b: {c: str(p.relative_to(results_dir)) for c, p in f.items()} for b, f in figures.items()}
    # Strict JSON (non-finite numbers are null); each file written atomically: a full disk leaves the previous
    # summary or none, never a 0-byte file.
    from harness.reporting import longcontext

    stable = longcontext.max_stable_lengths(records)
    if stable:
        summary["max_stable_length"] = stable
    md = markdown.render(rep, figures, base=results_dir)
    extra = longcontext.markdown_sections(records)  # maximum stable length, extrapolation, synthetic accuracy
    if extra:
        md = md.rstrip("\n") + "\n\n" + "\n".join(extra).rstrip("\n") + "\n"
    atomic_write(results_dir / "summary.json",
                 json.dumps(strict(summary), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")
    atomic_write(results_dir / "summary.md", md)
    atomic_write(results_dir / "summary.html", html_report.render(rep, figures, record_images(records, results_dir)))
    return rep


def _figures(rep: RunReport, records: list[dict[str, Any]], results_dir: Path) -> dict[str, dict[str, Path]]:
    """benchmark -> caption -> PNG: the analysis's figures of every benchmark, then the ones it registered itself."""
    folder = results_dir / "plots"
    figures = {b.name: benchmark_plots(b, folder) for b in rep.benchmarks}
    for bench, paths in registered_plots(results_dir, records).items():
        figures.setdefault(bench, {}).update({f"{REGISTERED}{p.stem}": p for p in paths})
    return figures


def _previous(results_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((results_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def summarize_folder(results_dir: Path, run_id: str | None = None, options: dict | None = None,
                     command: str | None = None, targets_dir: Path | None = None,
                     ) -> tuple[list[dict], RunReport | None]:
    """Merge the folder's worker files into ``records.jsonl`` (adding only), then summarise the latest record of
    every measurement in it (a reused or resumed folder holds several records of a cell). Returns those records and
    the analysis (None when the folder has no records). A rebuild keeps the options of the run that made it."""
    from harness.results.records import latest, merge_worker_files, read_results, worker_files

    results_dir = Path(results_dir)
    # merging returns every record of the folder: no second read
    records = latest(merge_worker_files(results_dir) if worker_files(results_dir) else read_results(results_dir))
    if not records:
        return records, None
    if options is None:
        options = _previous(results_dir).get("options") or {}
    rep = write_summary(results_dir, records, run_id or records[-1].get("run_id"), options, command=command,
                        targets_dir=targets_dir)
    return records, rep


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.reporting.summary RESULTS_DIR`` merges worker files (a controller killed before it did
    leaves records only there), rewrites and prints the summary of a results folder. Unreadable lines are skipped
    with one warning line each; a folder it cannot write to is one error line."""
    import sys
    import warnings

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness summary RESULTS_DIR", file=sys.stderr)
        return 2
    results_dir = Path(args[0])
    if not results_dir.is_dir():
        print(f"error: {results_dir} is not a results folder", file=sys.stderr)
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            records, _ = summarize_folder(results_dir)
        except OSError as exc:
            records, error = None, exc
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if records is None:
        print(f"error: cannot write the summary in {results_dir}: {error.strerror or error}; the records are "
              f"unchanged", file=sys.stderr)
        return 1
    if not records:
        print(f"harness summary: no records in {results_dir}; give a results folder (reports/results/<run-id>)",
              file=sys.stderr)
        return 2
    print((results_dir / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
