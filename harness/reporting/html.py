"""``summary.html``: the run as one self-contained page (inline CSS, images as data URIs, no script, no network),
so it opens offline, attaches to a CI run, and survives being mailed around.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from harness.reporting import tables as T
from harness.reporting.analysis import RunReport
from harness.reporting.format import fmt_num
from harness.reporting.plots import IMAGE_TYPES

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1400px;
     padding:0 1rem;color:#1d2733}
h1{font-size:1.6rem} h2{margin-top:2.2rem;border-bottom:2px solid #dde3ea;padding-bottom:.2rem}
h3{margin-top:1.4rem;font-size:1.05rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:13px}
th,td{border:1px solid #cfd7df;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#eef2f6} tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.cmd{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
.cmd{background:#f3f5f7;border:1px solid #dde3ea;padding:.5rem .7rem;display:block;white-space:pre-wrap}
.facts{color:#4b5866} .regressed,.failed,.error{color:#b3261e;font-weight:600} .passed,.ok{color:#1b7a3a}
.new,.skipped,.improved{color:#8a6100}
figure{margin:1rem 0} figure img{max-width:100%;border:1px solid #dde3ea} figcaption{color:#4b5866;font-size:12px}
"""
STATUS_CLASSES = ("passed", "failed", "error", "regressed", "ok", "new", "improved", "skipped")


def _e(x: Any) -> str:
    return html.escape(x if isinstance(x, str) else fmt_num(x))


def table(head: list[str], rows: list[list[Any]], cls: str = "") -> str:
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for x in row:
            num = isinstance(x, (int, float)) and not isinstance(x, bool)
            klass = "num" if num else (x if isinstance(x, str) and x in STATUS_CLASSES else "")
            cells.append(f'<td class="{klass}">{_e(x)}</td>' if klass else f"<td>{_e(x)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def image_tag(path: Path, caption: str) -> str:
    mime = IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:{mime};base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _p(text: str) -> str:
    """A paragraph; `backticks` become <code> as in the markdown summary."""
    return "<p>" + re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text)) + "</p>" if text else ""


def render(rep: RunReport, plots: dict[str, dict[str, Path]] | None = None,
           images: list[tuple[str, Path]] | None = None) -> str:
    parts = [f"<h1>lmbench run {_e(rep.run_id or '')}</h1>"]
    if rep.command:
        parts.append(f'<p>Command (from the repository root):</p><code class="cmd">{_e(rep.command)}</code>')
    parts.append(f'<p class="facts">{_e(" · ".join(T.facts(rep)))}</p>' + _p(T.counts_line(rep)))
    for b in rep.benchmarks:
        parts.append(f"<h2>{_e(b.name)}</h2>" + _p(T.constant_line(b)) + _p(f"Note: {b.spec.note}" if b.spec.note else ""))
        parts.append("<h3>Leaderboard</h3>" + _p(T.LEADERBOARD_NOTE) + table(*T.leaderboard(b), cls="leaderboard"))
        head, rows = T.intervals(b)
        if rows:
            parts.append("<h3>Intervals over seeds (95%)</h3>" + table(head, rows, cls="intervals"))
        elif any(g.stats for g in b.groups):
            parts.append(_p(T.ONE_SEED_NOTE))
        if b.comparisons:
            refs = ", ".join(sorted({c.reference for c in b.comparisons}))
            parts.append(f"<h3>Model comparisons against {_e(refs)}</h3>" + _p(T.COMPARISON_NOTE)
                         + table(*T.comparisons(b), cls="comparisons"))
        parts += [image_tag(Path(p), caption) for caption, p in (plots or {}).get(b.name, {}).items()]
    if images:
        parts.append("<h2>Plots from the benchmarks</h2>" + "".join(image_tag(p, c) for c, p in images))
    if rep.gate_cells:
        parts.append(f"<h2>Regression gate against <code>{_e(rep.baseline or '')}</code></h2>" + _p(T.gate_line(rep))
                     + table(*T.gate_cells(rep), cls="gate"))
        if rep.gate_groups:
            parts.append("<h3>Over seeds, paired with the baseline's seeds</h3>" + table(*T.gate_groups(rep)))
    if rep.skipped:
        parts.append("<h2>Skipped</h2><ul>" + "".join(
            f"<li>{n} × {_e(reason)} ({_e(', '.join(b))})</li>" for reason, n, b in rep.skipped) + "</ul>")
    if rep.not_passed:
        parts.append("<h2>Not passed</h2>" + table(*T.not_passed(rep)))
    if rep.benchmarks:
        parts.append("<h2>Every record</h2>")
        for b in rep.benchmarks:
            head, rows = T.records(b)
            parts.append(f"<details><summary>{_e(b.name)}: {len(rows)} records</summary>{table(head, rows)}</details>")
    if rep.environment:
        parts.append("<h2>Environment</h2>" + table(*T.environment(rep)))
    if rep.options:
        parts.append("<h2>Options</h2>" + table(["option", "value"], [[k, str(v)] for k, v in sorted(rep.options.items())]))
    body = "\n".join(p for p in parts if p)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>lmbench {_e(rep.run_id or "")}'
            f"</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
