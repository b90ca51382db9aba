"""Plots that measurements leave beside their records (``Result.artefacts``): matplotlib, headless, one PNG each.

Why here and not in ``harness/reporting``: a measurement returns its artefacts with its result, and measurements
never import from later steps; the session-level reports reuse these helpers.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence


def artefact_path(out_dir: Path, cell_id: str, name: str) -> Path:
    """``<out_dir>/<cell id made file-safe>.<name>.png`` (created folder)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", cell_id).strip("_")
    return out_dir / f"{slug}.{name}.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display; a backend already chosen by the user is kept
    import matplotlib.pyplot as plt

    return plt


def line_panels(path: Path, title: str, panels: Sequence[dict]) -> Path:
    """Side-by-side log-log panels. Each panel: ``xlabel``, ``ylabel``, ``series`` = [(label, xs, ys, yerr_lo,
    yerr_hi)] (errors may be None), optional ``fit`` = [(label, xs, ys)] drawn dashed, optional ``logy`` (default
    True)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, xs, ys, lo, hi in panel["series"]:
            if not xs:
                continue
            err = None if lo is None else [lo, hi]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        for label, xs, ys in panel.get("fit", ()):
            ax.plot(xs, ys, linestyle="--", linewidth=1, label=label)
        ax.set_xscale("log", base=2)
        if panel.get("logy", True):
            ax.set_yscale("log")
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scatter_frontier(path: Path, title: str, groups: Iterable[tuple[str, Sequence[float], Sequence[float]]],
                     frontier: Sequence[tuple[float, float]], xlabel: str, ylabel: str,
                     hlines: Iterable[tuple[str, float]] = (), vlines: Iterable[tuple[str, float]] = ()) -> Path:
    """Points per group (log x, log y), the Pareto frontier as a step line, optional reference lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, xs, ys in groups:
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, label=label)
    if frontier:
        fx, fy = zip(*frontier)
        ax.step(fx, fy, where="post", color="black", linewidth=2, alpha=0.6, label="Pareto frontier")
    for label, y in hlines:
        ax.axhline(y, linestyle=":", color="grey")
        ax.annotate(label, (ax.get_xlim()[0], y), fontsize=7, va="bottom")
    for _label, x in vlines:
        ax.axvline(x, linestyle=":", color="grey", alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
