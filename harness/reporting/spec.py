"""What a benchmark's reports lead with, declared as data in its targets file (``[report]``), not in code.

    [report]
    headline = ["ppl", "ppl_over_floor", "bits_per_byte"]  # the columns every table and the terminal show, in order
    compare = ["ppl"]            # metrics on which models are compared, paired by seed (default: the first headline)
    reference = "transformer"    # the model every other is compared with (default: the first model in the run)

Why here: a new benchmark (long context, quantization, throughput, downstream) gets readable tables by declaring
three keys beside its targets; without them, the metrics its targets and gate name are the headline. Which way is
better for a metric comes from its ``[gate]`` rule, else from its targets (``max_x``: lower is better).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.results.gate import RAW_SPEED_SUFFIXES
from harness.results.targets import TargetsError, load_targets, targets_path


@dataclass(frozen=True)
class ReportSpec:
    benchmark: str
    headline: tuple[str, ...] = ()
    compare: tuple[str, ...] = ()
    reference: str | None = None
    directions: dict[str, str] = field(default_factory=dict)  # metric -> "lower" | "higher" (is better)
    note: str | None = None  # why the spec fell back (e.g. a broken targets file)

    def direction(self, metric: str) -> str | None:
        return self.directions.get(metric)


def report_spec(benchmark: str, targets_dir: Path, records: Iterable[dict[str, Any]] = ()) -> ReportSpec:
    """The report spec of ``benchmark``; metrics named but absent from ``records`` are dropped from the headline."""
    records = list(records)
    present = _numeric_metrics(records)
    path = targets_path(benchmark, Path(targets_dir))
    targets: dict[str, Any] = {}
    note = None
    if path.is_file():
        try:
            targets = load_targets(benchmark, Path(targets_dir))
        except TargetsError as exc:
            note = str(exc)
    table = targets.get("report") or {}
    check_report_table(table, str(path))
    directions = _directions(targets)
    declared = list(table.get("headline") or [])
    if not declared:
        declared = [m for m in directions if not m.endswith(RAW_SPEED_SUFFIXES)]
    headline = [m for m in dict.fromkeys(declared) if not records or m in present]
    if not headline and present:  # nothing declared: the first few numeric metrics, so a table is never empty
        headline = sorted(m for m in present if not m.endswith(RAW_SPEED_SUFFIXES))[:4]
    compare = table.get("compare")
    compare = list(compare) if compare is not None else headline[:1]
    return ReportSpec(benchmark=benchmark, headline=tuple(headline), compare=tuple(m for m in compare),
                      reference=table.get("reference"), directions=directions, note=note)


def check_report_table(table: Any, where: str) -> None:
    """A ``[report]`` table with the wrong shape is a ``TargetsError`` naming the key."""
    if not isinstance(table, dict):
        raise TargetsError(f"{where}: [report] must be a table with headline, compare, reference")
    for key in ("headline", "compare"):
        value = table.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise TargetsError(f"{where} [report] {key}: give a list of metric names, e.g. [\"ppl\"]")
    if table.get("reference") is not None and not isinstance(table["reference"], str):
        raise TargetsError(f"{where} [report] reference: give one model name, e.g. \"transformer\"")
    unknown = set(table) - {"headline", "compare", "reference"}
    if unknown:
        raise TargetsError(f"{where} [report]: unknown key(s) {', '.join(sorted(unknown))}; "
                           "valid: headline, compare, reference")


def check_report_tables(targets_dir: Path) -> None:
    for path in sorted(Path(targets_dir).glob("*.toml")):
        check_report_table(load_targets(path.stem, Path(targets_dir)).get("report") or {}, str(path))


def _directions(targets: dict[str, Any]) -> dict[str, str]:
    """metric -> which way is better: the ``[gate]`` rule's direction, else the targets' ``max_``/``min_`` keys."""
    out: dict[str, str] = {}
    gate = targets.get("gate")
    if isinstance(gate, dict):
        for metric, spec in gate.items():
            if isinstance(spec, dict) and spec.get("direction") in ("lower", "higher"):
                out[metric] = spec["direction"]
    for name, table in targets.items():
        if name in ("gate", "report") or not isinstance(table, dict):
            continue
        for key in table:
            op, _, metric = key.partition("_")
            if op in ("max", "min") and metric:
                out.setdefault(metric, "lower" if op == "max" else "higher")
    return out


def _numeric_metrics(records: list[dict[str, Any]]) -> set[str]:
    out = set()
    for r in records:
        for k, v in (r.get("metrics") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.add(k)
    return out
