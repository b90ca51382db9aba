"""The tables of a run report as plain (header, rows) pairs: every renderer (markdown, HTML, terminal) draws the
same rows, so the reports cannot disagree. Cells are strings or numbers; renderers format numbers with ``fmt_num``.
"""
from __future__ import annotations

from typing import Any

from harness.reporting.analysis import BenchmarkReport, Group, RunReport
from harness.reporting.format import fmt_ci, fmt_num, fmt_p, fmt_pct, fmt_stat

Table = tuple[list[str], list[list[Any]]]

LEADERBOARD_NOTE = ("Mean ± half-width of the 95% t-interval over passed seeds (n seeds); best first within each "
                    "dataset on the first metric.")
COMPARISON_NOTE = ("Difference = model − reference, paired by seed. p-values are two-sided; Holm-corrected over every "
                   "comparison of this run. d_z = mean difference / std of the differences.")
ONE_SEED_NOTE = "One seed per cell: no interval or test is possible (run `--seeds 0,1,2` for intervals and tests)."


def facts(rep: RunReport) -> list[str]:
    """Budget, commit, device, versions: the line under a report's title."""
    env = rep.environment
    device = env.get("gpu") or env.get("device") or "?"
    cpu = env.get("cpu")
    budget = rep.options.get("budget") or _one(rep.records, "budget")
    out = [f"budget {budget}" if budget else "", f"commit {env.get('git_commit') or 'unknown'}",
           f"device {device}" + (f" ({cpu}, {env.get('torch_threads')} threads)" if cpu else ""),
           f"torch {env.get('torch')}" if env.get("torch") else "", f"python {env.get('python')}" if env.get("python")
           else ""]
    return [x for x in out if x]


def counts_line(rep: RunReport) -> str:
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(rep.counts.items())) or "no records"
    return f"{len(rep.records)} records ({counts})"


def _one(records: list[dict[str, Any]], key: str) -> Any:
    values = {r.get(key) for r in records if r.get(key) is not None}
    return next(iter(values)) if len(values) == 1 else None


def constant_line(b: BenchmarkReport) -> str:
    const = " · ".join(f"{k} {v}" for k, v in b.constant_axes.items() if v is not None)
    return f"All cells: {const}." if const else ""


def extra_keys(b: BenchmarkReport) -> list[str]:
    """Columns beside the axes: the test (when a benchmark has several measurements) and other cell parameters."""
    keys: dict[str, None] = {}
    for g in b.groups:
        for k in g.extra:
            if k != "device" or len({x.extra.get("device") for x in b.groups}) > 1:
                keys[k] = None
    return (["test"] if len({g.measure for g in b.groups}) > 1 else []) + list(keys)


def _extra(g: Group, key: str) -> str:
    return g.measure.split("/", 1)[-1] if key == "test" else g.extra.get(key, "")


def leaderboard(b: BenchmarkReport) -> Table:
    keys = extra_keys(b)
    head = list(b.varying_axes) + keys + ["seeds"] + list(b.metrics) + ["params (non-emb.)", "train tokens", "status"]
    rows = []
    for g in b.groups:
        status = ", ".join(f"{n} {s}" for s, n in sorted(g.statuses.items()))
        params = g.params.get("non_embedding") if g.params else None
        rows.append([g.axes.get(a) for a in b.varying_axes] + [_extra(g, k) for k in keys]
                    + [",".join(str(s) for s in g.seeds if s is not None) or "–"] + [fmt_stat(g.stats.get(m)) for m in b.metrics]
                    + [params, g.train_tokens, status])
    return head, rows


def intervals(b: BenchmarkReport) -> Table:
    rows = [[g.label, m, s.n, s.mean, s.std, fmt_ci(s.t_ci), fmt_ci(s.boot_ci)]
            for g in b.groups for m, s in g.stats.items() if s.n > 1]
    return ["cell", "metric", "n", "mean", "std", "t-interval", "bootstrap (BCa)"], rows


def comparisons(b: BenchmarkReport) -> Table:
    rows = []
    for c in b.comparisons:
        r = c.result
        better = "same" if r.mean_diff == 0 else {True: "better", False: "worse", None: ""}[c.better]
        verdict = f"{better}; {r.verdict()}" if r.testable and better else r.verdict()
        rows.append([context_label(c.context), c.metric, c.model, c.reference, r.n, r.mean_b, r.mean_a,
                     fmt_num(r.mean_diff), fmt_pct(r.rel_diff), fmt_ci(r.diff_ci), fmt_p(r.p_t), fmt_p(r.p_wilcoxon),
                     fmt_num(r.d_z, 3) if r.d_z is not None else "", fmt_p(r.p_t_holm), verdict])
    return ["cells", "metric", "model", "reference", "n", "model mean", "reference mean", "difference", "relative",
            "95% CI of difference", "paired t p", "Wilcoxon p", "d_z", "t p (Holm)", "verdict"], rows


def context_label(context: str) -> str:
    parts = context.split("|")
    keep = [p.split("=", 1)[1] for p in parts[1:] if p.split("=", 1)[0] in ("dataset", "seq_len", "bits", "mode")]
    return " · ".join(keep) or parts[0]


def gate_line(rep: RunReport) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(rep.gate_counts.items()))
    enforced = all(c.enforced for c in rep.gate_cells)
    return (f"{len(rep.gate_cells)} cells against {rep.baseline}: {counts}."
            + ("" if enforced else " Not enforced (--update-baseline): nothing fails on the gate."))


def gate_cells(rep: RunReport) -> Table:
    rows = []
    for c in rep.gate_cells:
        for m in c.checks:
            rows.append([c.cell_id, m.metric, m.baseline, m.value, fmt_pct(m.change), f"{m.tolerance * 100:g}%",
                         m.status])
        if not c.checks:
            rows.append([c.cell_id, "", "", "", "", "", f"{c.status}: {c.note}"])
    return ["cell", "metric", "baseline", "this run", "change", "allowed", "status"], rows


def gate_groups(rep: RunReport) -> Table:
    rows = []
    for g in rep.gate_groups:
        comp = g.comparison
        rows.append([g.group_id, g.metric, g.seeds, g.mean_baseline, g.mean_value, fmt_pct(g.change), g.status,
                     fmt_p(comp.get("p_t")), fmt_p(comp.get("p_wilcoxon")),
                     fmt_num(comp.get("d_z"), 3) if comp.get("d_z") is not None else "", fmt_p(comp.get("p_t_holm")),
                     comp.get("verdict")])
    return ["group", "metric", "n", "baseline mean", "mean", "change", "mean vs tolerance", "paired t p",
            "Wilcoxon p", "d_z", "t p (Holm)", "verdict"], rows


def records(b: BenchmarkReport) -> Table:
    rows = [[r.get("test_id"), r.get("seed"), r.get("status")] + [(r.get("metrics") or {}).get(m) for m in b.metrics]
            for g in b.groups for r in g.records]
    return ["test", "seed", "status", *b.metrics], rows


def not_passed(rep: RunReport) -> Table:
    return ["test", "status", "reason"], [[r.get("test_id"), r.get("status"), r.get("reason") or ""]
                                         for r in rep.not_passed]


def environment(rep: RunReport) -> Table:
    return ["", ""], [[k, v] for k, v in sorted(rep.environment.items()) if v is not None]
