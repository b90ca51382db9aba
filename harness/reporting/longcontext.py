"""Per-model summaries of the long-context and synthetic benchmarks, from records alone (so a killed run's folder
can be summarised too): the maximum stable length per model, and accuracy by length per task.

Maximum stable length: lengths of a model's stability records in increasing order; a length is *stable* when every
seed's record there passed (finite, learned: the targets of fixtures/targets/longcontext.toml held). The maximum
stable length is the longest length such that it and every shorter length that ran are stable; the first length
that is not says why (diverged, oom, timeout, failed, skipped with its reason).
"""
from __future__ import annotations

from typing import Any, Iterable

STABILITY = "longcontext/stability"
EXTRAPOLATION = "longcontext/extrapolation"


def _name(rec: dict[str, Any]) -> str:
    return (rec.get("cell_id") or "").split("|", 1)[0]


def _group(rec: dict[str, Any]) -> tuple:
    return (rec.get("model"), rec.get("dataset"), rec.get("tokenizer"), rec.get("budget"))


def stability_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if _name(r) == STABILITY and r.get("seq_len") is not None]


def max_stable_lengths(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, dataset, tokenizer, budget): max_stable_len (None if even the shortest is not), the
    stable lengths, and what happened at the first length that is not stable."""
    groups: dict[tuple, dict[int, list[dict[str, Any]]]] = {}
    for r in stability_records(records):
        groups.setdefault(_group(r), {}).setdefault(int(r["seq_len"]), []).append(r)
    rows = []
    for (model, dataset, tokenizer, budget), by_len in sorted(groups.items(), key=lambda kv: str(kv[0])):
        best, stable, stopped_at = None, [], None
        for length in sorted(by_len):
            recs = by_len[length]
            statuses = sorted({r.get("status") for r in recs})
            if statuses == ["passed"]:
                stable.append(length)
                if stopped_at is None:
                    best = length
                continue
            if stopped_at is None:
                bad = next(r for r in recs if r.get("status") != "passed")
                stopped_at = {"seq_len": length, "status": bad.get("status"), "reason": bad.get("reason"),
                              "seeds": len(recs)}
        rows.append({"model": model, "dataset": dataset, "tokenizer": tokenizer, "budget": budget,
                     "max_stable_len": best, "stable_lengths": stable, "lengths": sorted(by_len),
                     "first_unstable": stopped_at})
    return rows


def _fmt_len(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("M", 2**20), ("k", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def stability_table(records: Iterable[dict[str, Any]]) -> str:
    rows = max_stable_lengths(records)
    if not rows:
        return ""
    lines = ["| model | dataset | budget | lengths run | max stable length | first length not stable |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        first = r["first_unstable"]
        why = f"{_fmt_len(first['seq_len'])}: {first['status']} ({first['reason']})" if first else ""
        lines.append(f"| {r['model']} | {r['dataset']} | {r['budget']} | "
                     f"{', '.join(_fmt_len(n) for n in r['lengths'])} | {_fmt_len(r['max_stable_len'])} | "
                     f"{why.replace('|', '/')} |")
    return "\n".join(lines)


def synthetic_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        if r.get("benchmark") != "synthetic":
            continue
        task = dict(p.split("=", 1) for p in (r.get("cell_id") or "").split("|")[1:] if "=" in p).get("task")
        m = r.get("metrics") or {}
        rows.append({"task": task, "model": r.get("model"), "seed": r.get("seed"), "seq_len": r.get("seq_len"),
                     "status": r.get("status"), "accuracy": m.get("accuracy"), "best_lr": m.get("best_lr"),
                     "chance": m.get("chance"), "by_length": m.get("accuracy_by_length") or {}})
    return rows


def synthetic_table(records: Iterable[dict[str, Any]]) -> str:
    rows = synthetic_rows(records)
    if not rows:
        return ""
    factors = sorted({int(k) // r["seq_len"] for r in rows for k in r["by_length"] if r["seq_len"]})
    head = ["task", "model", "seed", "L", "status", "best lr"] + [f"acc @ {f}L" for f in factors] + ["chance"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (str(r["task"]), str(r["model"]), r["seed"] or 0)):
        accs = [r["by_length"].get(str(f * r["seq_len"])) for f in factors]
        cells = [r["task"], r["model"], r["seed"], r["seq_len"], r["status"],
                 f"{r['best_lr']:g}" if r["best_lr"] else ""]
        cells += [f"{a:.3f}" if a is not None else "" for a in accs]
        cells += [f"{r['chance']:.3f}" if r["chance"] else ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def markdown_sections(records: list[dict[str, Any]]) -> list[str]:
    """Sections for summary.md (empty when the run has neither benchmark)."""
    out: list[str] = []
    table = stability_table(records)
    if table:
        out += ["## Long-context stability: maximum stable length per model", "", table, ""]
    table = synthetic_table(records)
    if table:
        out += ["## Synthetic memory tasks: accuracy by length", "", table, ""]
    return out
