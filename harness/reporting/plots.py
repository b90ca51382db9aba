"""Plots of a run, drawn from its records at session end (matplotlib, Agg, PNG, under ``<results_dir>/plots/``).

Two kinds, both shown by every summary:

- every benchmark gets the same two figures from the analysis: its headline metric per cell, with the seeds and the
  95% t-interval, and its training-loss curves (``benchmark_plots``);
- a benchmark may register its own cross-cell figures with ``@plotter("<benchmark>")`` (perplexity vs bits per model
  for quantization) — figures that can only be drawn once every cell is measured (``make_plots``).

Why from records: drawing from the records means ``python -m harness summary DIR`` redraws every figure of any results
folder, including one whose run was killed. Per-cell plots are a measurement's ``artefacts`` instead and are shown
as they are (``record_images``).

Long-context and synthetic plots are drawn both ways: after each of their records (``for_record``: redrawn with
every record of the run so far, named in the record's ``artefacts`` and attached to its Allure / pytest-html entry,
so a killed run keeps them) and again at session end (registered below, every status: a diverged or out-of-memory
cell is part of the picture). Files are written atomically (xdist workers may redraw the same plot).

* ``longcontext-<model>-<dataset>.png``: training loss and gradient norm by step, one line per length (and seed);
* ``longcontext-max-stable-length.png``: maximum stable length per model (bars; the first unstable length noted);
* ``extrapolation-<model>-<dataset>.png``: perplexity relative to L at 2L, 4L, 8L, and loss by position bucket;
* ``synthetic-<task>.png``: accuracy against evaluated length, one line per model.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from harness.files import atomic_write
from harness.reporting.longcontext import EXTRAPOLATION, STABILITY, _name, max_stable_lengths, synthetic_rows

if TYPE_CHECKING:
    from harness.reporting.analysis import BenchmarkReport

IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".webp": "image/webp"}

PLOTTERS: dict[str, Callable[[list[dict[str, Any]], Path], list[Path]]] = {}
EVERY_STATUS: set[str] = set()  # benchmarks whose plotter gets every record, not only passed ones


def plotter(benchmark: str, every_status: bool = False) -> Callable:
    """Register ``fn(records_of_that_benchmark, out_dir) -> written paths`` (passed records only, unless
    ``every_status``: then failed, diverged, out-of-memory and skipped records too)."""

    def deco(fn: Callable[[list[dict[str, Any]], Path], list[Path]]) -> Callable:
        PLOTTERS[benchmark] = fn
        if every_status:
            EVERY_STATUS.add(benchmark)
        return fn

    return deco


def registered_plots(results_dir: Path, records: Iterable[dict[str, Any]]) -> dict[str, list[Path]]:
    """benchmark -> the figures its registered plotter drew from its passed records, under ``<results_dir>/plots/``."""
    records = list(records)
    out = Path(results_dir) / "plots"
    written: dict[str, list[Path]] = {}
    for bench, fn in PLOTTERS.items():
        mine = [r for r in records if r.get("benchmark") == bench
                and (bench in EVERY_STATUS or r.get("status") == "passed")]
        if mine:
            out.mkdir(parents=True, exist_ok=True)
            written[bench] = list(fn(mine, out))
    return written


def make_plots(results_dir: Path, records: Iterable[dict[str, Any]]) -> list[Path]:
    """Every registered plot of the benchmarks present, under ``<results_dir>/plots/``."""
    return [p for paths in registered_plots(results_dir, records).values() for p in paths]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only, no display
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
                curves.setdefault(g.label, []).append(_finite(losses))
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


# ------------------------------------------------------------------------------ long context and synthetic tasks


def _finite(values: Iterable[Any]) -> list[float]:
    """Values to draw: records store a non-finite number as null (strict JSON); both become a gap (NaN)."""
    return [float(v) if isinstance(v, (int, float)) and math.isfinite(v) else float("nan") for v in values]


def _slug(*parts: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(str(p) for p in parts if p is not None))


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def for_record(results_dir: Path, rec: dict[str, Any],
               run_records: Callable[[], list[dict[str, Any]]]) -> dict[str, Path]:
    """The plots ``rec`` belongs to, redrawn with the run's records (``rec`` replacing its own earlier version).
    ``run_records`` is called only for a record that has such plots: other benchmarks pay no read of the folder."""
    name = _name(rec)
    if name not in (STABILITY, EXTRAPOLATION) and rec.get("benchmark") != "synthetic":
        return {}
    records = [r for r in run_records() if r.get("cell_id") != rec.get("cell_id")] + [rec]
    out_dir = Path(results_dir) / "plots"
    if name == STABILITY:
        return {"training_curves": training_curves(out_dir, records, rec["model"], rec.get("dataset")),
                "max_stable_length": max_stable_length(out_dir, records)}
    if name == EXTRAPOLATION:
        return {"extrapolation": extrapolation(out_dir, records, rec["model"], rec.get("dataset"))}
    task = dict(p.split("=", 1) for p in (rec.get("cell_id") or "").split("|")[1:] if "=" in p).get("task")
    return {"accuracy_by_length": synthetic_accuracy(out_dir, records, task)}


def training_curves(out_dir: Path, records: list[dict[str, Any]], model: str, dataset: str | None) -> Path:
    plt = _pyplot()
    mine = sorted((r for r in records if _name(r) == STABILITY and r.get("model") == model
                   and r.get("dataset") == dataset and (r.get("train") or {}).get("losses")),
                  key=lambda r: (r.get("seq_len") or 0, r.get("seed") or 0))
    fig, (ax_l, ax_g) = plt.subplots(1, 2, figsize=(11, 4))
    lengths = sorted({r["seq_len"] for r in mine})
    colors = {n: plt.cm.viridis(i / max(1, len(lengths) - 1)) for i, n in enumerate(lengths)}
    for r in mine:
        tr = r["train"]
        steps = range(1, len(tr["losses"]) + 1)
        label = f"L={r['seq_len']:,} s{r.get('seed')} ({r.get('status')})"
        ax_l.plot(steps, _finite(tr["losses"]), color=colors[r["seq_len"]], lw=1, label=label)
        ax_g.plot(steps, _finite(tr["grad_norms"]), color=colors[r["seq_len"]], lw=1)
        if tr.get("diverged_step") is not None:
            ax_l.axvline(tr["diverged_step"] + 1, color=colors[r["seq_len"]], ls=":", lw=1)
    ax_l.set(title=f"{model}: training loss by length", xlabel="step", ylabel="loss (nats/token)")
    ax_g.set(title="gradient norm (before clipping)", xlabel="step", ylabel="‖g‖", yscale="log")
    if mine:
        ax_l.legend(fontsize=7)
    fig.suptitle(f"{model} on {dataset}", fontsize=9)
    path = _save(fig, out_dir / f"longcontext-{_slug(model, dataset)}.png")
    plt.close(fig)
    return path


def max_stable_length(out_dir: Path, records: list[dict[str, Any]]) -> Path:
    plt = _pyplot()
    rows = max_stable_lengths(records)
    fig, ax = plt.subplots(figsize=(7, 0.6 * max(3, len(rows)) + 1))
    labels = [f"{r['model']} ({r['dataset']}, {r['budget']})" for r in rows]
    values = [r["max_stable_len"] or 0 for r in rows]
    ax.barh(labels, values, color="tab:blue")
    for i, r in enumerate(rows):
        first = r["first_unstable"]
        note = f"  then {first['status']} at {first['seq_len']:,}" if first else "  every length run is stable"
        ax.text(max(values[i], 1), i, note, va="center", fontsize=7)
    if any(values):
        ax.set_xscale("log", base=2)
    ax.set(title="maximum stable training length", xlabel="sequence length (tokens)")
    path = _save(fig, out_dir / "longcontext-max-stable-length.png")
    plt.close(fig)
    return path


def extrapolation(out_dir: Path, records: list[dict[str, Any]], model: str, dataset: str | None) -> Path:
    plt = _pyplot()
    mine = sorted((r for r in records if _name(r) == EXTRAPOLATION and r.get("model") == model
                   and r.get("dataset") == dataset and (r.get("metrics") or {}).get("position_nll")),
                  key=lambda r: (r.get("seq_len") or 0, r.get("seed") or 0))
    fig, (ax_r, ax_p) = plt.subplots(1, 2, figsize=(11, 4))
    for r in mine:
        m, L = r["metrics"], r["seq_len"]
        factors = sorted(int(k[5:]) for k in m if re.fullmatch(r"ppl_x\d+", k))
        ax_r.plot(factors, [m[f"ppl_x{f}"] / m["ppl_x1"] for f in factors], marker="o",
                  label=f"trained at {L:,} s{r.get('seed')}")
        keys = sorted(m["position_nll"], key=lambda k: int(k[1:]))
        for key in dict.fromkeys([keys[0], keys[-1]]):  # at the training length and at the longest evaluated
            items = sorted(m["position_nll"][key].items(), key=lambda kv: int(kv[0].split("-")[-1]))
            ax_p.plot([int(b.split("-")[-1]) for b, _ in items], [v for _, v in items], marker=".", lw=1,
                      ls="-" if key == "x1" else "--", label=f"trained at {L:,}, windows {key}")
    ax_r.axhline(1.0, color="grey", lw=0.5)
    ax_r.set(title=f"{model}: perplexity at kL / at L", xlabel="k (evaluation length / training length)",
             ylabel="ppl ratio", xscale="log")
    ax_p.set(title="loss by position (tokens of context visible)", xlabel="context tokens (bucket end)",
             ylabel="mean NLL (nats)", xscale="log")
    if mine:
        ax_r.legend(fontsize=7)
        ax_p.legend(fontsize=6)
    fig.suptitle(f"{model} on {dataset}: a model that ignores context has a flat position curve", fontsize=9)
    path = _save(fig, out_dir / f"extrapolation-{_slug(model, dataset)}.png")
    plt.close(fig)
    return path


def synthetic_accuracy(out_dir: Path, records: list[dict[str, Any]], task: str | None) -> Path:
    plt = _pyplot()
    rows = sorted((r for r in synthetic_rows(records) if r["task"] == task and r["by_length"]),
                  key=lambda r: (str(r["model"]), r["seed"] or 0, r["seq_len"] or 0))
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        xs = sorted(int(k) for k in r["by_length"])
        ax.plot(xs, [r["by_length"][str(x)] for x in xs], marker="o",
                label=f"{r['model']} s{r['seed']} (trained at {r['seq_len']})")
    chance = next((r["chance"] for r in rows if r["chance"]), None)
    if chance:
        ax.axhline(chance, color="grey", ls="--", lw=0.8, label="chance")
    ax.set(title=f"{task}: held-out accuracy by length", xlabel="sequence length", ylabel="accuracy",
           xscale="log", ylim=(0, 1.02))
    ax.legend(fontsize=7)
    path = _save(fig, out_dir / f"synthetic-{_slug(task)}.png")
    plt.close(fig)
    return path


@plotter("longcontext", every_status=True)
def longcontext_plots(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Session end: every model's training curves and extrapolation, and the maximum stable length."""
    written = []
    pairs = sorted({(r.get("model"), r.get("dataset")) for r in records if r.get("model")}, key=str)
    for model, dataset in pairs:
        if any(_name(r) == STABILITY and r.get("model") == model for r in records):
            written.append(training_curves(out, records, model, dataset))
        if any(_name(r) == EXTRAPOLATION and r.get("model") == model for r in records):
            written.append(extrapolation(out, records, model, dataset))
    if any(_name(r) == STABILITY for r in records):
        written.append(max_stable_length(out, records))
    return written


@plotter("synthetic", every_status=True)
def synthetic_plots(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Session end: accuracy by length, one plot per task."""
    tasks = sorted({r["task"] for r in synthetic_rows(records) if r["task"]})
    return [synthetic_accuracy(out, records, task) for task in tasks]
