"""``python -m harness compare A B``: gate B against A outside pytest (two results folders or baseline files), print
the tables, exit 1 on a regression.

Why outside pytest: to compare a branch's results folder with main's, a CI artefact with a committed baseline, or two
baselines, without re-running anything. The rules are the same as the in-run gate (``harness/results/gate.py``):
the ``[gate]`` tables of the targets files (``--targets-dir``), falling back to the rules snapshotted in the files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.options import TARGETS_DIR
from harness.reporting.format import fmt_num, fmt_p, fmt_pct
from harness.reporting.markdown import table
from harness.results.baseline import Baseline, BaselineError, load_side
from harness.results.gate import REGRESSED, CellGate, GateConfig, GateRule, gate_for, judge_cell, judge_groups
from harness.results.targets import TargetsError


def rules(benchmark: str, budget: str | None, targets_dir: Path, *snapshots: Baseline) -> GateConfig:
    """The live rules of the targets file; where it has none, the rules a baseline file recorded."""
    live = gate_for(benchmark, budget, targets_dir)
    if live.rules:
        return live
    for snap in snapshots:
        rules_ = (snap.gate.get(benchmark) or {}).get(str(budget)) or {}
        if rules_:
            return GateConfig(rules={m: GateRule(metric=m, **{k: v for k, v in r.items() if k != "metric"})
                                     for m, r in rules_.items()})
    return live


def compare(a: Baseline, b: Baseline, targets_dir: Path) -> tuple[list[CellGate], list[str]]:
    """Every cell of B against A, and the ids of A's cells that B lacks."""
    cells = []
    for cid, cell in sorted(b.cells.items()):
        config = rules(cell.benchmark, cell.budget, targets_dir, b, a)
        base = a.get(cid)
        cells.append(judge_cell(cid, cell.metrics, cell.protocol, config, base.metrics if base else None,
                                base.protocol if base else None, a.name))
    missing = sorted(set(a.cells) - set(b.cells))
    return cells, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness compare",
                                     description="Gate B against A (results folders or baseline JSON files); "
                                                 "exit 1 when a cell of B regressed.")
    parser.add_argument("a", help="the reference: a results folder (reports/results/<run-id>) or a baseline file")
    parser.add_argument("b", help="the candidate: a results folder or a baseline file")
    parser.add_argument("--targets-dir", default=str(TARGETS_DIR), help="folder of target files with [gate] tables")
    parser.add_argument("--all", action="store_true", help="list every compared metric, not only the changed ones")
    args = parser.parse_args(argv)
    targets_dir = Path(args.targets_dir)
    try:
        config_for = lambda bench, budget: gate_for(bench, budget, targets_dir)  # noqa: E731
        a = load_side(args.a, "A", config_for)
        b = load_side(args.b, "B", config_for)
        cells, missing = compare(a, b, targets_dir)
    except (BaselineError, TargetsError) as exc:
        print(f"harness compare: {exc}", file=sys.stderr)
        return 2
    print(f"# {b.name} against {a.name}\n")
    rows = []
    for c in cells:
        for m in c.checks:
            if args.all or m.status != "ok":
                rows.append([c.cell_id, m.metric, fmt_num(m.baseline), fmt_num(m.value), fmt_pct(m.change),
                             f"{m.tolerance * 100:g}%", m.status])
        if not c.checks:
            rows.append([c.cell_id, "", "", "", "", "", f"{c.status}: {c.note}"])
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.status] = counts.get(c.status, 0) + 1
    print(f"{len(cells)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + (f"; {len(missing)} of A's cells are not in B" if missing else "") + "\n")
    if rows:
        print(table(["cell", "metric", "A", "B", "change", "allowed", "status"], rows) + "\n")
    groups = judge_groups(cells)
    if groups:
        grows = [[g.group_id, g.metric, g.seeds, fmt_num(g.mean_baseline), fmt_num(g.mean_value), fmt_pct(g.change),
                  g.status, fmt_p(g.comparison.get("p_t")), fmt_p(g.comparison.get("p_wilcoxon")),
                  fmt_num(g.comparison.get("d_z"), 3) if g.comparison.get("d_z") is not None else "",
                  fmt_p(g.comparison.get("p_t_holm")), g.comparison.get("verdict")] for g in groups]
        print("## Over seeds (paired by seed, Holm-corrected over the groups)\n")
        print(table(["group", "metric", "n", "A mean", "B mean", "change", "mean vs tolerance", "paired t p",
                     "Wilcoxon p", "d_z", "t p (Holm)", "verdict"], grows) + "\n")
    if missing:
        print("## In A, not in B\n\n" + "\n".join(f"- {cid}" for cid in missing) + "\n")
    regressed = [c for c in cells if c.status == REGRESSED]
    for c in regressed:
        print(f"REGRESSED {c.cell_id}: {c.message()}")
    return 1 if regressed else 0


if __name__ == "__main__":
    raise SystemExit(main())
