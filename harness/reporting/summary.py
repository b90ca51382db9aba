"""End-of-session summaries: ``summary.json`` (machine-readable) and ``summary.md`` (a table for humans/CI logs)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from harness.results.records import count_by_status

# Metrics shown in the markdown table, in order, when present.
HEADLINE_METRICS = (
    "ppl", "word_ppl", "bits_per_byte", "ppl_over_floor", "ppl_over_unigram",
    "speedup", "tokens_per_s", "per_token_ratio",
)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def build_summary(records: list[dict[str, Any]], run_id: str | None, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "options": options,
        "counts": count_by_status(records),
        "n_records": len(records),
        "records": [
            {
                k: r.get(k)
                for k in ("test_id", "cell_id", *GROUP_AXES, "seed", "status", "reason", "leak")
            }
            | {"metrics": r.get("metrics", {})}
            for r in records
        ],
    }


# Axes every table shows and every statistic groups by (the seed aside).
GROUP_AXES = ("benchmark", "model", "dataset", "tokenizer", "budget", "seq_len", "bits")


def markdown_table(records: Iterable[dict[str, Any]]) -> str:
    records = list(records)
    metric_cols = [m for m in HEADLINE_METRICS if any(m in (r.get("metrics") or {}) for r in records)]
    head = list(GROUP_AXES) + ["seed", "status"] + metric_cols
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        m = r.get("metrics") or {}
        row = [r.get(a) for a in GROUP_AXES] + [r.get("seed"), r.get("status")]
        lines.append("| " + " | ".join(_fmt(x) for x in row + [m.get(c) for c in metric_cols]) + " |")
    return "\n".join(lines)


def group_key(record: dict[str, Any]) -> str:
    """Every axis of a record's cell but its seed (the cell id without ``seed=``, or the axes of an older record)."""
    cell_id = record.get("cell_id")
    if cell_id:
        return "|".join(p for p in cell_id.split("|") if not p.startswith("seed="))
    return "|".join(f"{a}={record.get(a)}" for a in GROUP_AXES)


def aggregate_seeds(records: Iterable[dict[str, Any]], metrics: tuple[str, ...] = ("ppl", "bits_per_byte", "word_ppl",
                    "ppl_over_floor")) -> list[dict[str, Any]]:
    """Mean, sample std (numpy) and a 95% Student-t interval (scipy.stats) over seeds, per cell without its seed
    (every axis: benchmark, model, dataset, tokenizer, budget, seq_len, bits, device)."""
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


def seeds_table(rows: list[dict[str, Any]]) -> str:
    metric_cols = [m for m in ("ppl", "bits_per_byte", "word_ppl", "ppl_over_floor") if any(m in r for r in rows)]
    head = list(GROUP_AXES) + ["seeds"] + [f"{m} (mean ± std)" for m in metric_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r[a] for a in GROUP_AXES] + [r["n_seeds"]]
        cells += [f"{r[m]['mean']:.4g} ± {r[m]['std']:.2g}" if m in r else "" for m in metric_cols]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines)


def write_summary(results_dir: Path, records: list[dict[str, Any]], run_id: str | None, options: dict) -> None:
    from harness.reporting.plots import make_plots

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    summary = build_summary(records, run_id, options)
    summary["plots"] = [str(p.relative_to(results_dir)) for p in make_plots(results_dir, records)]
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary["counts"].items())) or "no records"
    md = [f"# lmbench run {run_id}", "", f"{len(records)} records ({counts})", "", markdown_table(records), ""]
    seeds = [row for row in aggregate_seeds(records) if row["n_seeds"] > 1]
    summary["over_seeds"] = seeds
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    if seeds:
        md += ["## Over seeds", "", seeds_table(seeds), ""]
    from harness.reporting import longcontext

    md += longcontext.markdown_sections(records)
    stable = longcontext.max_stable_lengths(records)
    if stable:
        summary["max_stable_length"] = stable
        (results_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    if summary["plots"]:
        md += ["## Plots", ""] + [f"![{p}]({p})" for p in summary["plots"]] + [""]
    failed = [r for r in records if r.get("status") not in ("passed", "skipped")]
    if failed:
        md += ["## Not passed", ""] + [f"- `{r.get('test_id')}`: {r.get('status')} — {r.get('reason')}" for r in failed]
    (results_dir / "summary.md").write_text("\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.reporting.summary RESULTS_DIR`` rewrites and prints the summary of a results folder."""
    import sys

    from harness.results.records import RECORDS_FILE, read_records

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.reporting.summary RESULTS_DIR", file=sys.stderr)
        return 2
    results_dir = Path(args[0])
    records = read_records(results_dir / RECORDS_FILE)
    if not records:
        print(f"no records in {results_dir / RECORDS_FILE}", file=sys.stderr)
        return 1
    write_summary(results_dir, records, records[0].get("run_id"), {})
    print((results_dir / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
