"""The headline table pytest prints at the end of a run: per benchmark, each cell's key metrics as mean ± the 95%
t-interval's half-width over seeds, then skips (one line per reason) and the regression gate's verdict."""
from __future__ import annotations

from harness.reporting import tables as T
from harness.reporting.analysis import RunReport
from harness.reporting.format import fmt_stat

MAX_METRICS = 4  # the terminal is narrow: the first few headline metrics; summary.md has them all


def lines(rep: RunReport) -> list[str]:
    out: list[str] = []
    for b in rep.benchmarks:
        metrics = b.metrics[:MAX_METRICS]
        keys = T.extra_keys(b)
        head = list(b.varying_axes) + keys + metrics + ["status"]
        rows = []
        for g in b.groups:
            status = ", ".join(f"{n} {s}" for s, n in sorted(g.statuses.items()))
            rows.append([str(g.axes.get(a)) for a in b.varying_axes] + [T._extra(g, k) for k in keys]
                        + [fmt_stat(g.stats.get(m)) for m in metrics] + [status])
        const = T.constant_line(b).removeprefix("All cells: ").rstrip(".")
        out.append(f"{b.name}: mean ± 95% t-interval half-width over seeds (n)" + (f"; {const}" if const else ""))
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)] if rows else []
        out.append("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
        out += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        for c in b.comparisons:
            if c.result.testable and c.result.significant:
                word = {True: "better", False: "worse", None: "different"}[c.better]
                out.append(f"  {c.model} vs {c.reference} on {c.metric} ({T.context_label(c.context)}): {word}, "
                           f"{c.result.verdict()}")
    for reason, n, _benchmarks in rep.skipped:
        out.append(f"skipped {n} × {reason}")
    if rep.gate_cells:
        out.append("gate: " + T.gate_line(rep))
        out += [f"  REGRESSED {c.cell_id}: {c.message()}" for c in rep.gate_cells if c.regressed]
    return out
