"""The regression gate: each record's metrics against a stored baseline, under rules declared in the targets files.

Why the rules live in ``fixtures/targets/<benchmark>.toml`` (a ``[gate]`` table) and not in code: a tolerance is a
claim about how reproducible a number is, calibrated from measured runs like any target, versioned and reviewed with
them; the gate itself works for any benchmark and any metric.

    [gate]
    alpha = 0.05                                    # significance level of the group tests (default 0.05)
    match_protocol = ["split", "window", "train"]   # protocol keys that must equal the baseline's to compare
    ppl = { direction = "lower", tolerance = { micro = 0.03, smoke = 0.02 }, kind = "quality" }
    speedup_vs_reference = { direction = "higher", tolerance = 0.5, kind = "speed-ratio" }

Two kinds of metric are gated. ``quality`` (perplexity, accuracy): the relative change against the same cell of the
baseline (same seed, same device type: the seed and device are in the cell id). ``speed-ratio``: only a ratio of two
timings measured side by side in the same run (e.g. a fused kernel over its reference path), so a slower machine
does not fail the gate; raw timings and throughputs (``*_s``, ``*_ms``, ``*_per_s``) are refused outright.

Per cell, a metric regresses when it is worse than the baseline by more than its tolerance; the test fails with one
line (``ppl regressed 31.2 → 35.0 (+12.2% > 5% allowed; baseline …)``). Over a group of seeds (every axis but the
seed), the paired comparison against the baseline's seeds (t-test, Wilcoxon, d_z, Holm over the run's family of
groups) says whether a change is systematic or one seed's noise; it is reported, never a second way to fail.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness.cells import group_of
from harness.results.targets import TargetsError, load_targets, targets_path

DIRECTIONS = ("lower", "higher")
KINDS = ("quality", "speed-ratio")
RAW_SPEED_SUFFIXES = ("_s", "_ms", "_us", "_ns", "_per_s")  # absolute timings and rates: machine-dependent
RESERVED = ("alpha", "match_protocol")
DEFAULT_ALPHA = 0.05

# Status of a cell against the baseline.
OK, IMPROVED, REGRESSED, NEW, PROTOCOL_CHANGED, UNGATED = (
    "ok", "improved", "regressed", "new", "protocol-changed", "ungated")


@dataclass(frozen=True)
class GateRule:
    metric: str
    direction: str  # "lower" or "higher" is better
    tolerance: float  # relative: 0.05 allows a change of 5% in the worse direction
    kind: str  # "quality" | "speed-ratio"
    where: str  # "fixtures/targets/perplexity.toml [gate] ppl"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateConfig:
    """The gate of one benchmark at one budget."""

    rules: dict[str, GateRule] = field(default_factory=dict)
    match_protocol: tuple[str, ...] = ()
    alpha: float = DEFAULT_ALPHA

    def protocol_of(self, protocol: Mapping[str, Any] | None) -> dict[str, Any]:
        """The part of a record's protocol that must match the baseline's for a comparison to mean anything."""
        protocol = protocol or {}
        picked = {k: protocol.get(k) for k in self.match_protocol if k in protocol}
        # As JSON stores it (tuples become lists), so a value read back from a baseline file compares equal.
        return json.loads(json.dumps(picked, sort_keys=True, default=str))


def gate_config(targets: Mapping[str, Any], where: str, budget: str | None) -> GateConfig:
    """Parse and check the ``[gate]`` table of a loaded targets file; a mistake is a ``TargetsError`` naming the
    key and the fix. Metrics whose tolerance is not defined for ``budget`` are not gated at that budget."""
    table = targets.get("gate")
    if table is None:
        return GateConfig()
    if not isinstance(table, dict):
        raise TargetsError(f"{where}: [gate] must be a table of metric = {{ direction, tolerance, kind }}")
    alpha = table.get("alpha", DEFAULT_ALPHA)
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise TargetsError(f"{where} [gate] alpha = {alpha!r}: give a significance level between 0 and 1, e.g. 0.05")
    match = table.get("match_protocol", [])
    if not isinstance(match, list) or not all(isinstance(k, str) for k in match):
        raise TargetsError(f"{where} [gate] match_protocol: give a list of protocol key names, e.g. [\"split\"]")
    rules: dict[str, GateRule] = {}
    for metric, spec in table.items():
        if metric in RESERVED:
            continue
        rule = _rule(metric, spec, f"{where} [gate] {metric}", budget)
        if rule is not None:
            rules[metric] = rule
    return GateConfig(rules=rules, match_protocol=tuple(match), alpha=float(alpha))


def gate_for(benchmark: str, budget: str | None, targets_dir: Path) -> GateConfig:
    """The gate of ``benchmark`` at ``budget`` from ``<targets_dir>/<benchmark>.toml`` (empty when the benchmark has
    no targets file: nothing to gate)."""
    path = targets_path(benchmark, Path(targets_dir))
    if not path.is_file():
        return GateConfig()
    return gate_config(load_targets(benchmark, Path(targets_dir)), _shown(path), budget)


def check_gate_tables(targets_dir: Path, budgets: Iterable[str]) -> None:
    """Parse every ``[gate]`` table of a targets folder at every budget: a mistake stops the run before anything
    runs (``TargetsError``), not in the middle of it."""
    for path in sorted(Path(targets_dir).glob("*.toml")):
        for budget in budgets:
            gate_for(path.stem, budget, Path(targets_dir))


def _shown(path: Path) -> str:
    from harness.env import REPO_ROOT

    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _rule(metric: str, spec: Any, where: str, budget: str | None) -> GateRule | None:
    fix = ("write it as { direction = \"lower\" | \"higher\", tolerance = 0.05 (or { smoke = 0.05, … }), "
           "kind = \"quality\" | \"speed-ratio\" }")
    if not isinstance(spec, dict):
        raise TargetsError(f"{where}: {fix}")
    unknown = set(spec) - {"direction", "tolerance", "kind"}
    if unknown:
        raise TargetsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; {fix}")
    direction, kind = spec.get("direction"), spec.get("kind", "quality")
    if direction not in DIRECTIONS:
        raise TargetsError(f"{where}: direction {direction!r} must be \"lower\" or \"higher\" (which is better)")
    if kind not in KINDS:
        raise TargetsError(f"{where}: kind {kind!r} must be \"quality\" or \"speed-ratio\"")
    if metric.endswith(RAW_SPEED_SUFFIXES):
        raise TargetsError(f"{where}: {metric} is a raw timing or rate, which depends on the machine; gate a ratio "
                           "measured side by side in the same run instead (kind = \"speed-ratio\")")
    raw = spec.get("tolerance")
    if isinstance(raw, dict):
        bad = [k for k, v in raw.items() if not _valid_tolerance(v)]
        raw = raw.get(budget) if budget is not None else None
    else:
        bad = [] if _valid_tolerance(raw) else ["tolerance"]
    if bad:
        raise TargetsError(f"{where}: tolerance must be a relative number >= 0 (0.05 = 5%), per budget or not")
    if raw is None:
        return None
    return GateRule(metric=metric, direction=direction, tolerance=float(raw), kind=kind, where=where)


def _valid_tolerance(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


# ------------------------------------------------------------------------------------------------- one cell


@dataclass
class MetricCheck:
    metric: str
    baseline: float
    value: float
    change: float | None  # (value - baseline) / |baseline|; None when the baseline is 0
    tolerance: float
    direction: str
    kind: str
    status: str  # ok | improved | regressed
    where: str = ""

    @property
    def worse_by(self) -> float | None:
        """The relative change in the worse direction (positive = worse)."""
        if self.change is None:
            return None
        return self.change if self.direction == "lower" else -self.change

    def message(self) -> str:
        change = "n/a" if self.change is None else f"{self.change:+.1%}"
        return (f"{self.metric} regressed {fmt_value(self.baseline)} → {fmt_value(self.value)} "
                f"({change} > {fmt_pct(self.tolerance)} allowed)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CellGate:
    """One cell against the baseline."""

    cell_id: str
    status: str  # ok | improved | regressed | new | protocol-changed | ungated
    checks: list[MetricCheck] = field(default_factory=list)
    note: str | None = None
    baseline: str | None = None  # the baseline file, as shown to users
    enforced: bool = True  # False under --update-baseline: reported, never failed

    @property
    def regressed(self) -> bool:
        return self.status == REGRESSED

    def message(self) -> str | None:
        """The one line a failing test shows."""
        bad = [c for c in self.checks if c.status == REGRESSED]
        if not bad:
            return None
        where = f" vs baseline {self.baseline}" if self.baseline else ""
        return "; ".join(c.message() for c in bad) + where

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "baseline": self.baseline, "note": self.note, "enforced": self.enforced,
                "message": self.message(), "checks": [c.to_dict() for c in self.checks]}

    @classmethod
    def from_dict(cls, cell_id: str, d: Mapping[str, Any]) -> "CellGate":
        """Back from a record's ``gate`` field (for the session-end and ``harness compare`` group tests)."""
        return cls(cell_id=cell_id, status=d.get("status", UNGATED), note=d.get("note"), baseline=d.get("baseline"),
                   enforced=d.get("enforced", True), checks=[MetricCheck(**c) for c in d.get("checks") or []])


def judge_cell(cell_id: str, metrics: Mapping[str, Any], protocol: Mapping[str, Any] | None, config: GateConfig,
               base_metrics: Mapping[str, Any] | None, base_protocol: Mapping[str, Any] | None,
               baseline_name: str | None = None) -> CellGate:
    """Compare one cell's metrics with its baseline entry (``base_metrics`` None: the cell is new)."""
    if not config.rules:
        return CellGate(cell_id, UNGATED, note="no [gate] rule for this benchmark and budget", baseline=baseline_name)
    if base_metrics is None:
        return CellGate(cell_id, NEW, note="not in the baseline: new cell, not compared", baseline=baseline_name)
    ours = config.protocol_of(protocol)
    theirs = {k: (base_protocol or {}).get(k) for k in ours}
    changed = [k for k in ours if ours[k] != theirs[k]]
    if changed:
        what = ", ".join(f"{k} {_short(theirs[k])} → {_short(ours[k])}" for k in changed)
        return CellGate(cell_id, PROTOCOL_CHANGED, baseline=baseline_name,
                        note=f"protocol changed since the baseline ({what}): not compared; refresh the baseline")
    checks = []
    for metric, rule in config.rules.items():
        value, base = metrics.get(metric), base_metrics.get(metric)
        if not _number(value) or not _number(base):
            continue
        checks.append(check_metric(rule, float(base), float(value)))
    if not checks:
        return CellGate(cell_id, UNGATED, baseline=baseline_name,
                        note=f"none of the gated metrics ({', '.join(config.rules)}) is in both the cell and baseline")
    statuses = {c.status for c in checks}
    status = REGRESSED if REGRESSED in statuses else IMPROVED if IMPROVED in statuses else OK
    return CellGate(cell_id, status, checks, baseline=baseline_name)


def check_metric(rule: GateRule, base: float, value: float) -> MetricCheck:
    change = (value - base) / abs(base) if base != 0 else None
    if change is None:
        # No relative change from a zero baseline: any change in the worse direction is a regression.
        worse = (value > base) if rule.direction == "lower" else (value < base)
        status = REGRESSED if worse else OK
    else:
        worse_by = change if rule.direction == "lower" else -change
        # A tiny epsilon: a change of exactly the tolerance is allowed even after floating-point rounding.
        status = REGRESSED if worse_by > rule.tolerance + 1e-12 else IMPROVED if -worse_by > rule.tolerance else OK
    return MetricCheck(metric=rule.metric, baseline=base, value=value, change=change, tolerance=rule.tolerance,
                       direction=rule.direction, kind=rule.kind, status=status, where=rule.where)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 40 else text[:37] + "…"


def fmt_value(v: float) -> str:
    """Four significant digits, trailing zeros kept (35.00, 14.35, 588.2); thousands separated above 10^4."""
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    return f"{v:#.4g}".rstrip(".")


def fmt_pct(x: float) -> str:
    return f"{x * 100:g}%"


# ------------------------------------------------------------------------------------------- groups of seeds


@dataclass
class GroupGate:
    """One metric of one group (a cell without its seed) against the baseline, paired by seed."""

    group_id: str
    metric: str
    direction: str
    tolerance: float
    seeds: int
    mean_baseline: float
    mean_value: float
    change: float | None  # relative change of the means
    status: str  # ok | improved | regressed (the mean change against the tolerance)
    comparison: dict[str, Any]  # PairedComparison.to_dict() of baseline (a) vs this run (b)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_groups(cells: Iterable[CellGate], alpha: float = DEFAULT_ALPHA) -> list[GroupGate]:
    """Paired tests over the seeds each group shares with the baseline, Holm-corrected over every group and metric
    of the run with at least two seeds (the family)."""
    from harness.stats import compare_paired, holm

    pairs: dict[tuple[str, str], list[MetricCheck]] = {}
    for cell in cells:
        for c in cell.checks:
            pairs.setdefault((group_of(cell.cell_id), c.metric), []).append(c)
    groups, comparisons = [], []
    for (gid, metric), checks in sorted(pairs.items()):
        comp = compare_paired([c.baseline for c in checks], [c.value for c in checks], alpha=alpha)
        first = checks[0]
        rule = GateRule(metric, first.direction, first.tolerance, first.kind, first.where)
        change = check_metric(rule, comp.mean_a, comp.mean_b)
        groups.append(GroupGate(gid, metric, first.direction, first.tolerance, comp.n, comp.mean_a, comp.mean_b,
                                change.change, change.status, {}))
        comparisons.append(comp)
    for comp, p_t, p_w in zip(comparisons, holm([c.p_t for c in comparisons]),
                              holm([c.p_wilcoxon for c in comparisons])):
        comp.p_t_holm, comp.p_wilcoxon_holm = p_t, p_w
    for g, comp in zip(groups, comparisons):
        g.comparison = comp.to_dict()
    return groups
