"""``summary.md``: the run as markdown tables, for pasting into papers, PRs and CI logs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.reporting import tables as T
from harness.reporting.analysis import BenchmarkReport, RunReport
from harness.reporting.format import fmt_num


def table(head: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        return (x if isinstance(x, str) else fmt_num(x)).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def benchmark_section(b: BenchmarkReport, plots: dict[str, str] | None = None) -> list[str]:
    out = [f"## {b.name}", ""]
    for line in (T.constant_line(b), f"Note: {b.spec.note}" if b.spec.note else ""):
        if line:
            out += [line, ""]
    out += [T.LEADERBOARD_NOTE, "", table(*T.leaderboard(b)), ""]
    head, rows = T.intervals(b)
    if rows:
        out += ["### Intervals over seeds (95%)", "", table(head, rows), ""]
    elif any(g.stats for g in b.groups):
        out += [T.ONE_SEED_NOTE, ""]
    if b.comparisons:
        refs = ", ".join(sorted({c.reference for c in b.comparisons}))
        out += [f"### Model comparisons against {refs}", "", T.COMPARISON_NOTE, "", table(*T.comparisons(b)), ""]
    for caption, path in (plots or {}).items():
        out += [f"![{caption}]({path})", ""]
    return out


def render(rep: RunReport, plots: dict[str, dict[str, Path]] | None = None, base: Path | None = None) -> str:
    """The whole ``summary.md``; plot paths are written relative to ``base`` (the results folder)."""
    md = [f"# lmbench run {rep.run_id or ''}".rstrip(), ""]
    if rep.command:
        md += [f"Command: `{rep.command}`", ""]
    md += [" · ".join(T.facts(rep)), "", T.counts_line(rep), ""]
    for b in rep.benchmarks:
        rel = {c: _rel(p, base) for c, p in (plots or {}).get(b.name, {}).items()}
        md += benchmark_section(b, rel)
    if rep.gate_cells:
        md += [f"## Regression gate against `{rep.baseline}`", "", T.gate_line(rep), "", table(*T.gate_cells(rep)), ""]
        if rep.gate_groups:
            md += ["### Over seeds, paired with the baseline's seeds", "", table(*T.gate_groups(rep)), ""]
    if rep.skipped:
        md += ["## Skipped", ""] + [f"- {n} × {reason} ({', '.join(b)})" for reason, n, b in rep.skipped] + [""]
    if rep.not_passed:
        md += ["## Not passed", ""] + [f"- `{r.get('test_id')}`: {r.get('status')} — {r.get('reason')}"
                                       for r in rep.not_passed] + [""]
    if rep.benchmarks:
        md += ["## Every record", ""]
        for b in rep.benchmarks:
            md += [f"### {b.name}", "", table(*T.records(b)), ""]
    if rep.environment:
        md += ["## Environment", "", table(*T.environment(rep)), ""]
    return "\n".join(md).rstrip() + "\n"


def _rel(path: Path | str, base: Path | None) -> str:
    try:
        return str(Path(path).relative_to(base)) if base else str(path)
    except ValueError:
        return str(path)
