"""Records → the numbers every report shows: groups over seeds with intervals, paired model comparisons with
Holm-corrected p-values, skips grouped by reason, and the regression gate's verdicts.

Why one analysis and several renderers (terminal, ``summary.md``, ``summary.html``, ``summary.json``): every report
must show the same numbers; a renderer only formats. Works on plain record dicts of any benchmark.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.cells import group_of, without_axes
from harness.reporting.spec import ReportSpec, report_spec
from harness.results.gate import CellGate, GroupGate, judge_groups
from harness.stats import PairedComparison, SeedStats, compare_paired, describe, holm

# Record axes a table may show, in order (those that do not vary within a benchmark are shown once above it).
AXES = ("model", "dataset", "tokenizer", "budget", "seq_len", "bits")
NOT_RUN = ("skipped",)


@dataclass
class Group:
    """One cell without its seed: every record of it, and the statistics of its passed seeds."""

    group_id: str
    benchmark: str
    measure: str  # "perplexity" or "kernels/bk_core_speedup_vs_reference"
    axes: dict[str, Any]
    extra: dict[str, str]  # other cell parameters (e.g. mode=causal), device
    records: list[dict[str, Any]]
    stats: dict[str, SeedStats] = field(default_factory=dict)  # metric -> over passed seeds

    @property
    def seeds(self) -> list[Any]:
        return [r.get("seed") for r in self.passed]

    @property
    def passed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") == "passed"]

    @property
    def statuses(self) -> Counter:
        return Counter(r.get("status", "unknown") for r in self.records)

    @property
    def label(self) -> str:
        extra = [v for k, v in self.extra.items() if k != "device"]
        return " · ".join(str(v) for v in [self.axes.get("model"), self.axes.get("dataset"), *extra] if v is not None)

    def first(self, key: str) -> Any:
        for r in self.records:
            if r.get(key) not in (None, {}, []):
                return r.get(key)
        return None

    @property
    def params(self) -> dict[str, Any]:
        return self.first("params") or {}

    @property
    def train_tokens(self) -> int | None:
        train = self.first("train") or {}
        return train.get("tokens")


@dataclass
class Comparison:
    benchmark: str
    metric: str
    context: str  # the cells compared, without model and seed
    reference: str
    model: str
    direction: str | None
    result: PairedComparison

    @property
    def better(self) -> bool | None:
        """Whether ``model`` is better than the reference on average (None: no direction declared or no change)."""
        d = self.result.mean_diff
        if self.direction is None or d == 0:
            return None
        return d < 0 if self.direction == "lower" else d > 0

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "metric": self.metric, "context": self.context,
                "reference": self.reference, "model": self.model, "direction": self.direction,
                "better": self.better} | self.result.to_dict()


@dataclass
class BenchmarkReport:
    name: str
    spec: ReportSpec
    groups: list[Group]
    comparisons: list[Comparison]
    constant_axes: dict[str, Any]  # axes with one value across the benchmark's measured records
    varying_axes: list[str]

    @property
    def metrics(self) -> list[str]:
        """Headline metrics some group has."""
        return [m for m in self.spec.headline if any(m in g.stats for g in self.groups)]


@dataclass
class RunReport:
    run_id: str | None
    command: str | None
    options: dict[str, Any]
    records: list[dict[str, Any]]
    benchmarks: list[BenchmarkReport]
    skipped: list[tuple[str, int, list[str]]]  # (reason, count, benchmarks)
    not_passed: list[dict[str, Any]]
    gate_cells: list[CellGate]
    gate_groups: list[GroupGate]
    baseline: str | None
    environment: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(r.get("status", "unknown") for r in self.records))

    @property
    def gate_counts(self) -> dict[str, int]:
        return dict(Counter(c.status for c in self.gate_cells))


def analyse(records: Iterable[dict[str, Any]], targets_dir: Path, run_id: str | None = None,
            command: str | None = None, options: dict[str, Any] | None = None, alpha: float = 0.05) -> RunReport:
    records = list(records)
    measured = [r for r in records if r.get("status") not in NOT_RUN]
    by_bench: dict[str, list[dict[str, Any]]] = {}
    for r in measured:
        by_bench.setdefault(r.get("benchmark") or "?", []).append(r)
    benchmarks = [_benchmark(name, rs, targets_dir, alpha) for name, rs in sorted(by_bench.items())]
    family = [c.result for b in benchmarks for c in b.comparisons]
    for comp, p_t, p_w in zip(family, holm([c.p_t for c in family]), holm([c.p_wilcoxon for c in family])):
        comp.p_t_holm, comp.p_wilcoxon_holm = p_t, p_w
    gate_cells = [CellGate.from_dict(r.get("cell_id") or r.get("test_id"), r["gate"]) for r in records
                  if isinstance(r.get("gate"), dict) and r.get("status") not in NOT_RUN]
    baseline = next((c.baseline for c in gate_cells if c.baseline), None)
    env = next((r.get("environment") for r in measured if r.get("environment")), None) or \
        next((r.get("environment") for r in records if r.get("environment")), None) or {}
    return RunReport(
        run_id=run_id, command=command, options=dict(options or {}), records=records, benchmarks=benchmarks,
        skipped=_skips(records), not_passed=[r for r in measured if r.get("status") != "passed"],
        gate_cells=gate_cells, gate_groups=judge_groups(gate_cells, alpha), baseline=baseline, environment=env)


def _benchmark(name: str, records: list[dict[str, Any]], targets_dir: Path, alpha: float) -> BenchmarkReport:
    spec = report_spec(name, targets_dir, [r for r in records if r.get("status") == "passed"] or records)
    groups: dict[str, Group] = {}
    for r in records:
        cid = r.get("cell_id") or "|".join(f"{a}={r.get(a)}" for a in ("benchmark", *AXES))
        gid = group_of(cid)
        if gid not in groups:
            parts = cid.split("|")
            known = {*AXES, "seed"}
            extra = {k: v for k, _, v in (p.partition("=") for p in parts[1:]) if k not in known}
            groups[gid] = Group(group_id=gid, benchmark=name, measure=parts[0], axes={a: r.get(a) for a in AXES},
                                extra=extra, records=[])
        groups[gid].records.append(r)
    for g in groups.values():
        for m in spec.headline:
            vals = [float(r["metrics"][m]) for r in g.passed if _finite((r.get("metrics") or {}).get(m))]
            if vals:
                g.stats[m] = describe(vals)
    ordered = sorted(groups.values(), key=lambda g: _sort_key(g, spec))
    values = {a: {g.axes.get(a) for g in ordered} for a in AXES}
    constant = {a: next(iter(v)) for a, v in values.items() if len(v) == 1 and a != "model"}
    varying = [a for a in AXES if a not in constant]
    return BenchmarkReport(name=name, spec=spec, groups=ordered, comparisons=_comparisons(name, ordered, spec, alpha),
                           constant_axes=constant, varying_axes=varying)


def _sort_key(g: Group, spec: ReportSpec) -> tuple:
    """Leaderboard order: by context (dataset, length, …), then best first on the first headline metric."""
    metric = next((m for m in spec.headline if m in g.stats), None)
    value = g.stats[metric].mean if metric else math.inf
    if metric and spec.direction(metric) == "higher":
        value = -value
    context = without_axes(g.group_id, "model")
    return (g.measure, context, value, str(g.axes.get("model")))


def _comparisons(name: str, groups: list[Group], spec: ReportSpec, alpha: float) -> list[Comparison]:
    """Every model against the reference model of its context (same benchmark, dataset, tokenizer, budget, length,
    bits, device, parameters), paired by seed over the seeds both passed."""
    out: list[Comparison] = []
    contexts: dict[str, list[Group]] = {}
    for g in groups:
        if g.axes.get("model") is not None:
            contexts.setdefault(without_axes(g.group_id, "model"), []).append(g)
    for context, members in contexts.items():
        models = [g.axes["model"] for g in members]
        if len(members) < 2:
            continue
        ref_name = spec.reference if spec.reference in models else sorted(models)[0]
        ref = next(g for g in members if g.axes["model"] == ref_name)
        for metric in spec.compare:
            ref_vals = _by_seed(ref, metric)
            for g in members:
                if g is ref:
                    continue
                vals = _by_seed(g, metric)
                shared = sorted(set(ref_vals) & set(vals), key=str)
                if not shared:
                    continue
                res = compare_paired([ref_vals[s] for s in shared], [vals[s] for s in shared], alpha=alpha)
                res.extra["seeds"] = shared
                out.append(Comparison(name, metric, context, ref_name, g.axes["model"], spec.direction(metric), res))
    return out


def _by_seed(g: Group, metric: str) -> dict[Any, float]:
    return {r.get("seed"): float(r["metrics"][metric]) for r in g.passed if _finite((r.get("metrics") or {}).get(metric))}


def _skips(records: list[dict[str, Any]]) -> list[tuple[str, int, list[str]]]:
    """Skipped records, one entry per reason: (reason, how many, which benchmarks)."""
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "skipped":
            by_reason.setdefault(r.get("reason") or "(no reason given)", []).append(r)
    return [(reason, len(rs), sorted({str(r.get("benchmark")) for r in rs}))
            for reason, rs in sorted(by_reason.items(), key=lambda kv: -len(kv[1]))]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
