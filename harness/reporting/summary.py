"""End-of-session summaries: ``summary.json`` (machine-readable) and ``summary.md`` (a table for humans/CI logs)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from harness.records import iter_by_status

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
        "counts": iter_by_status(records),
        "n_records": len(records),
        "records": [
            {
                k: r.get(k)
                for k in ("test_id", "benchmark", "model", "dataset", "tokenizer", "seed", "status", "reason", "leak")
            }
            | {"metrics": r.get("metrics", {})}
            for r in records
        ],
    }


def markdown_table(records: Iterable[dict[str, Any]]) -> str:
    records = list(records)
    metric_cols = [m for m in HEADLINE_METRICS if any(m in (r.get("metrics") or {}) for r in records)]
    head = ["benchmark", "model", "dataset", "tokenizer", "seed", "status"] + metric_cols
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        m = r.get("metrics") or {}
        row = [r.get("benchmark"), r.get("model"), r.get("dataset"), r.get("tokenizer"), r.get("seed"), r.get("status")]
        lines.append("| " + " | ".join(_fmt(x) for x in row + [m.get(c) for c in metric_cols]) + " |")
    return "\n".join(lines)


def write_summary(results_dir: Path, records: list[dict[str, Any]], run_id: str | None, options: dict) -> None:
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    summary = build_summary(records, run_id, options)
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary["counts"].items())) or "no records"
    md = [f"# lmbench run {run_id}", "", f"{len(records)} records ({counts})", "", markdown_table(records), ""]
    failed = [r for r in records if r.get("status") not in ("passed", "skipped")]
    if failed:
        md += ["## Not passed", ""] + [f"- `{r.get('test_id')}`: {r.get('status')} — {r.get('reason')}" for r in failed]
    (results_dir / "summary.md").write_text("\n".join(md) + "\n")
