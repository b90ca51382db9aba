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


def _cell_part(record: dict[str, Any], key: str) -> str | None:
    """A ``key=value`` part of a record's cell id (e.g. the downstream task)."""
    for part in (record.get("cell_id") or "").split("|")[1:]:
        k, _, v = part.partition("=")
        if k == key:
            return v
    return None


@plotter("downstream")
def downstream_plots(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Accuracy per task and model with its 95% interval, against the majority-class rate of the same examples:
    zero-shot cells (left) and fine-tuned ones (right), one figure per training dataset. Seeds are averaged."""
    import numpy as np

    plt = _pyplot()
    written = []
    kinds = (("zero-shot", "downstream|"), ("fine-tuned", "downstream/finetune|"))
    for dataset in sorted({r.get("dataset") for r in records if _cell_part(r, "task")}):
        panels = [(title, [r for r in records if r.get("dataset") == dataset and _cell_part(r, "task")
                           and (r.get("cell_id") or "").startswith(prefix) and "acc" in (r.get("metrics") or {})])
                  for title, prefix in kinds]
        panels = [(t, rs) for t, rs in panels if rs]
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(6 + 5 * len(panels), 4), squeeze=False)
        for ax, (title, rs) in zip(axes[0], panels):
            tasks = sorted({_cell_part(r, "task") for r in rs})
            models = sorted({r.get("model") for r in rs})
            width = 0.8 / len(models)
            for j, model in enumerate(models):
                xs, ys, lo, hi = [], [], [], []
                for i, task in enumerate(tasks):
                    mine = [r["metrics"] for r in rs if r.get("model") == model and _cell_part(r, "task") == task]
                    if not mine:
                        continue
                    acc = float(np.mean([m["acc"] for m in mine]))
                    low = float(np.mean([m.get("acc_low", m.get("seed0_acc_low", m["acc"])) for m in mine]))
                    high = float(np.mean([m.get("acc_high", m.get("seed0_acc_high", m["acc"])) for m in mine]))
                    xs.append(i - 0.4 + width * (j + 0.5))
                    ys.append(acc)
                    lo.append(max(0.0, acc - low))
                    hi.append(max(0.0, high - acc))
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=model)
            for i, task in enumerate(tasks):
                maj = [r["metrics"]["majority_acc"] for r in rs
                       if _cell_part(r, "task") == task and "majority_acc" in r["metrics"]]
                if maj:
                    ax.hlines(float(np.mean(maj)), i - 0.45, i + 0.45, colors="black", linestyles="dashed")
            ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
            ax.set(ylim=(0, 1), ylabel="accuracy", title=f"{title} ({dataset}); dashed: majority class")
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"downstream-{dataset}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
