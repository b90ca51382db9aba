"""The one place a record is finalised: cell + result (+ where the weights came from) → record fields and a verdict.

Why one place: every benchmark would otherwise assign a dozen record fields by hand and re-implement what a leak, a
divergence or a missed target means. Benchmarks call ``finalize`` (through the plugin's ``bench`` fixture) and stay
a few lines; the plugin turns the verdict into the pytest outcome.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.cells import Cell
from harness.measure.result import Result
from harness.provision import Provenance
from harness.results.baseline import Baseline
from harness.results.gate import gate_config, judge_cell
from harness.results.records import Record
from harness.results.targets import TargetsError, checks_for, load_targets, recorded_hints, targets_path


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "passed" | "failed" | "xfailed"
    message: str | None = None


def fill(record: Record, cell: Cell, result: Result, provenance: Provenance | None = None) -> None:
    """Copy the cell, the result and the provenance into the record (no judgement)."""
    record.cell_id = cell.cell_id
    record.model = cell.model or result.subject
    record.dataset, record.tokenizer, record.seed = cell.dataset, cell.tokenizer, cell.seed
    record.bits, record.budget = cell.bits, cell.budget
    record.seq_len = cell.seq_len if cell.seq_len is not None else result.protocol.get("seq_len")
    record.metrics = dict(result.metrics)
    record.protocol = dict(result.protocol)
    record.leak = result.leak
    record.artefacts = dict(result.artefacts)
    notes = [n for n in (provenance.notes if provenance else None, result.notes) if n]
    record.notes = "; ".join(notes) or None
    if provenance is not None:
        record.params = dict(provenance.params)
        record.config_hash = provenance.weights_key
        record.train = dict(provenance.train)
        record.protocol.update(train=provenance.train_config, eval=provenance.eval_config,
                               model_preset=provenance.preset)
    if result.status is not None:
        record.status, record.reason = result.status, result.reason


def finalize(record: Record, cell: Cell, result: Result, *, targets_dir: Path,
             provenance: Provenance | None = None, baseline: Baseline | None = None,
             enforce_gate: bool = True) -> Verdict:
    """Fill ``record`` and judge it: status hints first (divergence, leaks, non-finite numbers), then every target
    of ``fixtures/targets/<benchmark>.toml`` that applies, then (with a ``baseline``) the regression gate of that
    file's ``[gate]`` table. A cell no target applies to fails: a benchmark that cannot fail proves nothing.
    ``enforce_gate=False`` (``--update-baseline``) records the gate's verdict without failing on it."""
    fill(record, cell, result, provenance)
    subject = " on ".join(x for x in (record.model, cell.dataset) if x) or cell.cell_id
    bad = nonfinite(result.metrics) if result.status is None else None
    if bad:
        record.status, record.reason = "nonfinite", f"{subject}: {bad}"
        return Verdict("failed", record.reason)
    refused = impossible(result.metrics) if result.status is None else None
    if refused:
        record.status, record.reason = "impossible", f"{subject}: {refused}"
        return Verdict("failed", record.reason)
    if result.status == "leak":
        if provenance is not None and not provenance.causal:
            return Verdict("xfailed", f"{result.reason} (declared non-causal: its perplexity is not comparable)")
        return Verdict("failed", result.reason)
    if result.status is not None:
        # What a hint means is the benchmark's to say, in its targets file (``record_hints``): by default a failure;
        # where listed, a result (the record keeps the status, the test is an expected failure).
        try:
            where, recorded = recorded_hints(load_targets(cell.benchmark, Path(targets_dir)),
                                             result.target_section or cell.dataset)
        except TargetsError:
            where, recorded = None, ()
        if result.status in recorded:
            record.protocol["record_hints"] = f"{_shown(targets_path(cell.benchmark, targets_dir))} [{where}]"
            return Verdict("xfailed", f"{result.reason or subject + ': ' + result.status} (recorded, not failed: "
                                      f"{_shown(targets_path(cell.benchmark, targets_dir))} [{where}] record_hints)")
        return Verdict("failed", result.reason or f"{subject}: {result.status}")

    path = targets_path(cell.benchmark, targets_dir)
    targets = load_targets(cell.benchmark, Path(targets_dir))
    section = result.target_section or cell.dataset
    checks = checks_for(targets, _shown(path), section, cell.budget, record.model, result.metrics)
    if not checks:
        tried = ", ".join(f"[{s}]" for s in dict.fromkeys(x for x in (section, "default") if x))
        return Verdict("failed", f"no target in {_shown(path)} applies to {cell.cell_id} (sections {tried}, "
                                 f"budget {cell.budget}, metrics {', '.join(sorted(result.metrics))}): add one")
    record.protocol["targets_version"] = targets["version"]
    record.protocol["targets"] = {c.metric: {c.op: c.limit} for c in checks}
    failures = [c.failure(result.metrics[c.metric], subject) for c in checks if not c.holds(result.metrics[c.metric])]
    if baseline is not None:
        config = gate_config(targets, _shown(path), cell.budget)
        entry = baseline.get(cell.cell_id)
        gate = judge_cell(cell.cell_id, result.metrics, record.protocol, config, entry.metrics if entry else None,
                          entry.protocol if entry else None, baseline.name)
        gate.enforced = enforce_gate
        record.gate = gate.to_dict()
        if gate.regressed and enforce_gate:
            failures.append(gate.message())
    return Verdict("failed", "; ".join(failures)) if failures else Verdict("passed")


def nonfinite(metrics: dict) -> str | None:
    """Which metrics are NaN or infinite (None if none): such a result is a ``nonfinite`` status with this reason,
    and the record stores the values as null (strict JSON), never as a number a table could sort."""
    import math

    bad = [f"{k} = {v}" for k, v in metrics.items()
           if isinstance(v, float) and not isinstance(v, bool) and not math.isfinite(v)]
    if not bad:
        return None
    return f"{', '.join(bad)}: not a finite number (NaN or an overflow); the record keeps the training log"


def impossible(metrics: dict) -> str | None:
    """The first value no correct measurement can produce, named by the metric conventions every benchmark uses:
    an accuracy outside [0, 1], a perplexity below 1, a negative loss, a utilisation above 1 (a ratio named
    ``…_over_…``, such as accuracy over chance, is neither). None if all are possible. (Below-floor perplexities need the source's floor: the perplexity measurement refuses those.)"""
    import math

    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        name = key.lower()
        if (name == "acc" or name.startswith("acc_") or name.endswith("_acc") or "accuracy" in name
                or name.endswith("_f1") or name == "f1") and "over" not in name and not 0.0 <= value <= 1.0:
            return f"{key} = {value:.6g} is outside [0, 1]: an accuracy cannot be; the result is refused"
        if ("ppl" in name.split("_") or name.endswith("perplexity")) and "over" not in name and value < 1.0:
            return f"{key} = {value:.6g} is below 1: a perplexity cannot be; the result is refused"
        if (name in ("nll", "loss") or name.endswith(("_nll", "_loss"))) and value < 0.0:
            return f"{key} = {value:.6g} is negative: a loss cannot be; the result is refused"
        if (name == "mfu" or name.endswith("_mfu")) and value > 1.0:
            return f"{key} = {value:.6g} is above 1: faster than the hardware's peak; the result is refused"
    return None


def _shown(path: Path) -> str:
    """A targets path as users know it (relative to the repository when it lives there)."""
    from harness.env import REPO_ROOT

    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
