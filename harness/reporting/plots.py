"""Plots across the cells of a run, made at session end from the records (matplotlib, PNG, beside the records).

Why from records: a plot that spans cells (perplexity vs bits per model) can only be drawn once every cell is
measured, and drawing it from the records means `python -m harness.reporting.summary DIR` redraws it for any
results folder, including one whose run was killed. Per-cell plots are a measurement's ``artefacts`` instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

PLOTTERS: dict[str, Callable[[list[dict[str, Any]], Path], list[Path]]] = {}


def plotter(benchmark: str) -> Callable:
    """Register ``fn(records_of_that_benchmark, out_dir) -> written paths``."""

    def deco(fn: Callable[[list[dict[str, Any]], Path], list[Path]]) -> Callable:
        PLOTTERS[benchmark] = fn
        return fn

    return deco


def make_plots(results_dir: Path, records: Iterable[dict[str, Any]]) -> list[Path]:
    """Every registered plot of the benchmarks present, under ``<results_dir>/plots/``."""
    records = list(records)
    out = Path(results_dir) / "plots"
    written: list[Path] = []
    for bench, fn in PLOTTERS.items():
        mine = [r for r in records if r.get("benchmark") == bench and r.get("status") == "passed"]
        if mine:
            out.mkdir(parents=True, exist_ok=True)
            written += fn(mine, out)
    return written


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


BIT_ORDER = ("fp32", "fp16", "bf16", "int8", "int4", "int3", "int2")


@plotter("quantization")
def quantization_plots(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Perplexity vs bits per model, and packed size vs perplexity (one line per model, per dataset)."""
    plt = _pyplot()
    written = []
    for dataset in sorted({r.get("dataset") for r in records}):
        rs = [r for r in records if r.get("dataset") == dataset]
        models = sorted({r.get("model") for r in rs})
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        for model in models:
            pts = sorted((BIT_ORDER.index(r["bits"]), r["metrics"]["ppl"], r["metrics"]["packed_mb"])
                         for r in rs if r.get("model") == model and r.get("bits") in BIT_ORDER)
            if not pts:
                continue
            a.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=model)
            b.plot([p[2] for p in pts], [p[1] for p in pts], marker="o", label=model)
        a.set_xticks(range(len(BIT_ORDER)), BIT_ORDER)
        a.set(xlabel="weights", ylabel="perplexity", title=f"perplexity vs bits ({dataset})")
        b.set(xlabel="packed size (MB)", ylabel="perplexity", title="size vs perplexity")
        a.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"quantization-{dataset}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
