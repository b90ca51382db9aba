"""pytest-html (``--html report.html --self-contained-html``): per benchmark test, a metrics table and the plots
embedded in the row's details, and a "metrics" column in the results table — numbers, not only pass/fail."""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from harness.reporting.format import fmt_num

IMAGE_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
              ".gif": "image/gif"}


def active(config: Any) -> bool:
    return bool(config.pluginmanager.hasplugin("html") and config.getoption("htmlpath", None))


def headline_text(record: dict[str, Any], headline: tuple[str, ...]) -> str:
    """``ppl 14.35 · ppl_over_floor 1.693`` (the results-table column)."""
    metrics = record.get("metrics") or {}
    return " · ".join(f"{m} {fmt_num(metrics[m])}" for m in headline if metrics.get(m) is not None)


def extras(record: dict[str, Any], headline: tuple[str, ...], base: Path) -> list[dict[str, Any]]:
    """pytest-html extras: an HTML table of the record's metrics (headline first), its verdict and gate, and every
    image artefact as an embedded image."""
    from pytest_html import extras as x

    metrics = record.get("metrics") or {}
    order = [m for m in headline if m in metrics] + sorted(m for m in metrics if m not in headline)
    rows = "".join(f"<tr><td>{html.escape(m)}</td><td style='text-align:right'>{html.escape(fmt_num(metrics[m]))}"
                   f"</td></tr>" for m in order)
    facts = [("cell", record.get("cell_id")), ("status", record.get("status")), ("reason", record.get("reason")),
             ("params", (record.get("params") or {}).get("non_embedding")),
             ("train tokens", (record.get("train") or {}).get("tokens"))]
    gate = record.get("gate") or {}
    if gate:
        facts.append(("gate", f"{gate.get('status')}: {gate.get('message') or gate.get('note') or 'within tolerance'}"
                              f" (baseline {gate.get('baseline')})"))
    fact_rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(fmt_num(v))}</td></tr>"
                        for k, v in facts if v not in (None, ""))
    out = [x.html(f"<div class='lmbench'><table>{fact_rows}</table>"
                  f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table></div>")] if (rows or fact_rows) else []
    for name, p in (record.get("artefacts") or {}).items():
        path = Path(p) if Path(p).is_absolute() else base / p
        mime = IMAGE_MIME.get(path.suffix.lower())
        if mime and path.is_file():
            out.append(x.image(base64.b64encode(path.read_bytes()).decode("ascii"), name=name, mime_type=mime,
                               extension=path.suffix.lstrip(".")))
    return out
