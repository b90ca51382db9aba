"""Plots every summary carries (matplotlib, Agg, PNG): the headline metric per cell with its seeds and 95% interval,
and the training-loss curves. Plots a benchmark makes itself come as ``record.artefacts`` and are shown as they are.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.files import atomic_write
from harness.reporting.analysis import BenchmarkReport

IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".webp": "image/webp"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, buf.getvalue())
    return path


def benchmark_plots(b: BenchmarkReport, folder: Path) -> dict[str, Path]:
    """name -> PNG path: the first headline metric per cell, and training loss where records have it."""
    out: dict[str, Path] = {}
    metric = next((m for m in b.metrics), None)
    if metric is not None:
        path = headline_plot(b, metric, folder / f"{_slug(b.name)}-{_slug(metric)}.png")
        if path:
            out[f"{b.name}: {metric} per cell"] = path
    path = loss_plot(b, folder / f"{_slug(b.name)}-train-loss.png")
    if path:
        out[f"{b.name}: training loss"] = path
    return out


def headline_plot(b: BenchmarkReport, metric: str, path: Path) -> Path | None:
    groups = [g for g in b.groups if metric in g.stats]
    if not groups:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(groups) + 1.2))
    for y, g in enumerate(groups):
        s = g.stats[metric]
        vals = [r["metrics"][metric] for r in g.passed if isinstance((r.get("metrics") or {}).get(metric), (int, float))]
        ax.scatter(vals, [y] * len(vals), s=14, color="#9aa5b1", zorder=2, label="seeds" if y == 0 else None)
        if s.t_ci:
            ax.errorbar([s.mean], [y], xerr=[[s.mean - s.t_ci[0]], [s.t_ci[1] - s.mean]], fmt="o", color="#1f5fa8",
                        capsize=3, zorder=3, label="mean, 95% t-interval" if y == 0 else None)
        else:
            ax.plot([s.mean], [y], "o", color="#1f5fa8", zorder=3, label="mean, 95% t-interval" if y == 0 else None)
    ax.set_yticks(range(len(groups)), [g.label for g in groups])
    ax.invert_yaxis()
    better = b.spec.direction(metric)
    ax.set_xlabel(metric + (f" ({better} is better)" if better else ""))
    ax.set_title(f"{b.name}: {metric} over seeds")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def loss_plot(b: BenchmarkReport, path: Path) -> Path | None:
    curves: dict[str, list[list[float]]] = {}
    for g in b.groups:
        for r in g.passed:
            losses = (r.get("train") or {}).get("losses")
            if isinstance(losses, list) and len(losses) > 1 and all(isinstance(x, (int, float)) for x in losses):
                curves.setdefault(g.label, []).append([float(x) for x in losses])
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for label, runs in sorted(curves.items()):
        n = min(len(x) for x in runs)
        mean = [sum(run[i] for run in runs) / len(runs) for i in range(n)]
        ax.plot(range(1, n + 1), [m if math.isfinite(m) else float("nan") for m in mean],
                label=f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})", linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.set_title(f"{b.name}: training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def record_images(records: list[dict[str, Any]], base: Path) -> list[tuple[str, Path]]:
    """(title, path) of every image artefact of the records (relative paths are resolved against ``base``)."""
    out = []
    for r in records:
        for name, p in (r.get("artefacts") or {}).items():
            path = Path(p) if Path(p).is_absolute() else base / p
            if path.suffix.lower() in IMAGE_TYPES and path.is_file():
                out.append((f"{r.get('test_id')}: {name}", path))
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text).strip("-")
