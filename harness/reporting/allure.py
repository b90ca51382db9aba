"""Allure results (``--alluredir``): one Allure test per cell, labelled and parametrized by its axes, with the record
JSON and the benchmark's plots attached, and an ``environment.properties`` file (versions, device) per run.

Why from the record: the record is written the moment a test's outcome is known, skipped cells included, so every
cell — not only those that ran — carries its record in the Allure report. Render offline:
``npx allure generate reports/allure-results -o reports/allure-report`` (docs/reports.md).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABEL_AXES = ("benchmark", "model", "dataset", "bits", "seq_len")
PARAM_AXES = ("model", "dataset", "tokenizer", "seed", "budget", "seq_len", "bits")
IMAGE_TYPES = {".png": "PNG", ".svg": "SVG", ".jpg": "JPG", ".jpeg": "JPG", ".gif": "GIF"}


def active(config: Any) -> bool:
    return bool(config.pluginmanager.hasplugin("allure_pytest") and config.getoption("--alluredir", None))


def attach_record(record: dict[str, Any], cell_id: str | None, base: Path) -> None:
    """Label, parametrize and attach one record to the Allure test that is running (call from the report hook)."""
    import allure

    for axis in LABEL_AXES:
        if record.get(axis) is not None:
            allure.dynamic.label(axis, str(record[axis]))
    if record.get("benchmark"):
        allure.dynamic.feature(str(record["benchmark"]))
    if record.get("model"):
        allure.dynamic.story(str(record["model"]))
    if cell_id:
        allure.dynamic.parameter("cell", cell_id)  # replaces the Cell object's repr that allure-pytest added
    for axis in PARAM_AXES:
        if record.get(axis) is not None:
            allure.dynamic.parameter(axis, str(record[axis]))
    allure.attach(json.dumps(record, indent=2, sort_keys=True, default=str), name="lmbench record",
                  attachment_type=allure.attachment_type.JSON)
    for name, p in (record.get("artefacts") or {}).items():
        path = Path(p) if Path(p).is_absolute() else base / p
        kind = IMAGE_TYPES.get(path.suffix.lower())
        if path.is_file():
            attachment_type = getattr(allure.attachment_type, kind) if kind else None
            allure.attach.file(str(path), name=name, attachment_type=attachment_type)


def write_environment(alluredir: Path, records: list[dict[str, Any]], options: dict[str, Any]) -> Path | None:
    """``environment.properties`` of the run (Allure shows it on the overview page)."""
    env = next((r.get("environment") for r in records if r.get("environment")), None) or {}
    props = {k: env.get(k) for k in ("python", "torch", "transformers", "numpy", "cuda", "device", "gpu", "cpu",
                                     "cpu_count", "torch_threads", "git_commit", "platform")}
    props |= {f"lmbench.{k}": options.get(k) for k in ("run_id", "budget", "seeds", "models", "datasets", "tokenizer",
                                                       "device", "baseline")}
    lines = [f"{k}={_escape(v)}" for k, v in props.items() if v not in (None, "", [])]
    if not lines:
        return None
    from harness.files import atomic_write

    return atomic_write(Path(alluredir) / "environment.properties", "\n".join(lines) + "\n")


def _escape(v: Any) -> str:
    text = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    return text.replace("\\", "\\\\").replace("\n", " ").replace("=", "\\=").replace(":", "\\:")
