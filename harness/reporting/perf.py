"""Session reports of the throughput, memory and efficiency benchmarks: ``throughput.md``, ``memory.md``,
``efficiency.md`` and ``efficiency.png`` (validation perplexity against training FLOPs, every model's curve, the
Pareto frontier across all of them) beside ``summary.md``.

Written at the end of a pytest session (when such records exist) and by
``python -m harness.reporting.perf RESULTS_DIR [MORE_RESULTS_DIRS ...]``, which merges runs (e.g. one per budget:
the frontier across budgets and model sizes) and writes into the first folder.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from harness.measure.efficiency import pareto_frontier

PERF_BENCHMARKS = ("throughput", "memory", "efficiency")


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        if abs(v) >= 1e7:
            return f"{v:.{digits - 1}e}".replace("e+0", "e").replace("e+", "e")
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"
    return str(v)


def _table(head: list[str], rows: Iterable[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]
    return out


def _measure(rec: dict[str, Any]) -> str:
    return (rec.get("cell_id") or "").split("|", 1)[0]


def _iqr(m: dict[str, Any], name: str) -> str:
    med, q1, q3 = m.get(f"{name}_tokens_per_s"), m.get(f"{name}_q1_tokens_per_s"), m.get(f"{name}_q3_tokens_per_s")
    if med is None:
        return "—"
    return f"{med:,.0f} [{q1:,.0f}–{q3:,.0f}]" if q1 is not None and q3 is not None else f"{med:,.0f}"


def _plots(recs: list[dict[str, Any]], name: str, out_dir: Path) -> list[str]:
    """Links to the per-cell plots the records name (relative to the report's folder where they live under it)."""
    lines = []
    for r in recs:
        path = (r.get("artefacts") or {}).get(name)
        if path:
            try:
                shown = str(Path(path).resolve().relative_to(Path(out_dir).resolve()))
            except ValueError:
                shown = str(path)
            lines.append(f"- [{r['model']} ({r.get('dataset')}, {r.get('budget')})]({shown})")
    return (["Per-cell plots:", ""] + lines + [""]) if lines else []


def _cross_plot(path: Path, title: str, recs: list[dict[str, Any]], rows_of, x: str, y: str, xlabel: str,
                ylabel: str, label_of=lambda r: r["model"]) -> Path | None:
    """One panel, one line per record: ``rows_of(record)`` gives the points (dicts with keys ``x`` and ``y``)."""
    from harness.measure.plots import line_panels

    series = []
    for r in recs:
        pts = sorted((p for p in rows_of(r) if p.get(x) and p.get(y)), key=lambda p: p[x])
        if pts:
            series.append((label_of(r), [p[x] for p in pts], [p[y] for p in pts], None, None))
    if not series:
        return None
    return line_panels(path, title, [{"xlabel": xlabel, "ylabel": ylabel, "series": series}])


def _length_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The points of a throughput record's length sweep (fixed tokens per batch)."""
    sweep = r["protocol"].get("sweep", {})
    lengths, tokens = set(sweep.get("seq_lens", ())), sweep.get("length_tokens", 0)
    return [p for p in r["protocol"].get("points", []) if "error" not in p and p["seq_len"] in lengths
            and p["batch"] == max(1, tokens // p["seq_len"])]


def throughput_md(records: list[dict[str, Any]], out_dir: Path | None = None) -> list[str]:
    md: list[str] = []
    main = [r for r in records if _measure(r) in ("throughput", "throughput/throughput_gpu") and r.get("metrics")]
    if main:
        md += ["## Tokens/s at the headline point (median [IQR])", ""]
        rows = []
        for r in main:
            m, p = r["metrics"], r["protocol"]
            base = p.get("sweep", {}).get("base", [None, None])
            rows.append([r["model"], r.get("dataset"), r.get("budget"), p.get("device"), p.get("threads"),
                         f"{base[0]} x {base[1]}", _iqr(m, "train"), _iqr(m, "prefill"), _iqr(m, "decode"),
                         m.get("train_flops_per_token"), m.get("train_mfu"), m.get("prefill_mfu"), r.get("status")])
        md += _table(["model", "dataset", "budget", "device", "threads", "L x B", "train tok/s", "prefill tok/s",
                      "decode tok/s", "train FLOPs/token", "train MFU", "prefill MFU", "status"], rows) + [""]
        md += ["## Training tokens/s over the sweep", ""]
        for r in main:
            pts = [p for p in r["protocol"].get("points", []) if "error" not in p]
            md += [f"**{r['model']}** ({r.get('dataset')}, {r.get('budget')}; peak "
                   f"{_f(r['metrics'].get('peak_flops_per_s'))} FLOP/s, {r['protocol']['peak']['source']})", ""]
            md += _table(["L", "B", "train tok/s", "prefill tok/s", "train/prefill", "FLOPs/token (fwd)", "train MFU"],
                         [[p["seq_len"], p["batch"], p["train_tokens_per_s"], p["prefill_tokens_per_s"],
                           p["train_over_prefill"], p.get("fwd_flops_per_token"), p.get("train_mfu")] for p in pts])
            md += [""]
        if out_dir is not None:
            for device in sorted({r["protocol"].get("device", "") for r in main}):
                mine = [r for r in main if r["protocol"].get("device", "") == device]
                path = _cross_plot(Path(out_dir) / f"throughput-{device.replace(':', '')}.png",
                                   f"training tokens/s against length ({device}, median over rounds)", mine,
                                   _length_rows, "seq_len", "train_tokens_per_s", "sequence length",
                                   "training tokens/s", lambda r: f"{r['model']} ({r.get('budget')})")
                if path is not None:
                    md += [f"![training tokens/s against length]({path.name})", ""]
            md += _plots(main, "throughput_plot", out_dir)
    vs = [r for r in records if _measure(r).startswith("throughput/speed_vs_transformer") and r.get("metrics")]
    if vs:
        lengths = sorted({p["seq_len"] for r in vs for p in r["protocol"]["points"] if "error" not in p})
        md += ["## Training tokens/s over the Transformer's, same rounds (> 1: faster)", ""]
        md += _table(["model", "budget"] + [f"L={n}" for n in lengths] + ["crossover L"],
                     [[r["model"], r.get("budget")] + [r["metrics"].get(f"L{n}_train_ratio") for n in lengths]
                      + [r["metrics"].get("train_crossover_len")] for r in vs]) + [""]
    ov = [r for r in records if _measure(r).startswith("throughput/harness_overhead") and r.get("metrics")]
    if ov:
        md += ["## Harness overhead (tokens/s of the evaluation path over other loops, same batches, same rounds)", ""]
        md += _table(["model", "budget", "vocab", "eval/bare", "IQR", "exp floor/bare (best possible)",
                      "eval/exp floor", "eval/library", "status"],
                     [[r["model"], r.get("budget"), int(r["metrics"].get("vocab_size", 0)),
                       r["metrics"].get("overhead_ratio"),
                       f"{_f(r['metrics'].get('overhead_ratio_q1'))}–{_f(r['metrics'].get('overhead_ratio_q3'))}",
                       r["metrics"].get("floor_ratio"), r["metrics"].get("overhead_vs_floor"),
                       r["metrics"].get("overhead_vs_library"), r.get("status")]
                      for r in ov]) + [""]
    return md


def _memory_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"seq_len": row["seq_len"], "mb": row["peak_bytes"] / (1024 * 1024)} for row in r["protocol"]["rows"]
            if row["mode"] == "train" and not row.get("error") and row["peak_bytes"] > 0]


def memory_md(records: list[dict[str, Any]], out_dir: Path | None = None) -> list[str]:
    recs = [r for r in records if r.get("benchmark") == "memory" and r.get("metrics")]
    if not recs:
        return []
    md = ["## Peak memory per step at the longest length, and log-log slope against length", ""]
    md += _table(["model", "budget", "L", "B", "train MiB", "checkpointed MiB", "ckpt/plain", "inference MiB",
                  "train slope", "ckpt slope", "inference slope", "status"],
                 [[r["model"], r.get("budget"), r["protocol"]["seq_len"], r["protocol"]["batch"],
                   r["metrics"].get("train_peak_mb"), r["metrics"].get("train_ckpt_peak_mb"),
                   r["metrics"].get("ckpt_over_plain"), r["metrics"].get("infer_peak_mb"),
                   r["metrics"].get("train_memory_slope"), r["metrics"].get("train_ckpt_memory_slope"),
                   r["metrics"].get("infer_memory_slope"), r.get("status")] for r in recs])
    methods = sorted({r["protocol"]["method"] for r in recs})
    md += [""] + [f"Method: {m}." for m in methods] + [""]
    if out_dir is not None:
        path = _cross_plot(Path(out_dir) / "memory.png", "peak memory of a training step against length (log-log)",
                           recs, _memory_rows, "seq_len", "mb", "sequence length", "peak above resident (MiB)",
                           lambda r: f"{r['model']} (slope {r['metrics'].get('train_memory_slope', math.nan):.2f})")
        if path is not None:
            md += [f"![peak memory against length]({path.name})", ""]
        md += _plots(recs, "memory_plot", out_dir)
    return md


def efficiency_groups(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Efficiency records by (dataset, tokenizer): curves comparable on one plot (any budget, any size)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("benchmark") == "efficiency" and r.get("protocol", {}).get("curve"):
            groups.setdefault((r.get("dataset"), r.get("tokenizer")), []).append(r)
    return groups


def efficiency_md(records: list[dict[str, Any]], out_dir: Path) -> tuple[list[str], dict[str, str]]:
    groups = efficiency_groups(records)
    if not groups:
        return [], {}
    md: list[str] = []
    plots: dict[str, str] = {}
    for (dataset, tok), recs in groups.items():
        budgets = sorted({k for r in recs for k in r["metrics"] if k.startswith("ppl_at_")},
                         key=lambda k: float(k.split("_")[2]))
        md += [f"## {dataset} ({tok}): validation perplexity against training FLOPs", ""]
        md += _table(["model", "budget", "params (non-emb.)", "FLOPs/token (train)", "final ppl", "target ppl",
                      "FLOPs to target", "time to target (s)"] + [b.replace("ppl_at_", "ppl @ ").replace("_flops", "")
                                                                  for b in budgets],
                     [[r["model"], r.get("budget"), (r.get("params") or {}).get("non_embedding"),
                       r["metrics"].get("train_flops_per_token"), r["metrics"].get("final_ppl"),
                       r["metrics"].get("target_ppl"),
                       r["metrics"].get("flops_to_target") if r["metrics"].get("reached_target") else "not reached",
                       r["metrics"].get("time_to_target_s")] + [r["metrics"].get(b) for b in budgets]
                      for r in recs]) + [""]
        points = [(c["train_flops"], c["ppl"], f"{r['model']} ({r.get('budget')})") for r in recs
                  for c in r["protocol"]["curve"]]
        frontier = pareto_frontier([(x, y) for x, y, _ in points])
        segments: list[list[Any]] = []  # consecutive frontier points of one run: [owner, x0, y0, x1, y1]
        for fx, fy in frontier:
            owner = next(name for x, y, name in points if x == fx and y == fy)
            if segments and segments[-1][0] == owner:
                segments[-1][3:] = [fx, fy]
            else:
                segments.append([owner, fx, fy, fx, fy])
        md += ["Pareto frontier (points no other beats on both FLOPs and perplexity), in order of FLOPs: "
               + "; ".join(f"{o} {_f(x0)}–{_f(x1)} FLOPs (ppl {y0:.3g} → {y1:.3g})" for o, x0, y0, x1, y1 in segments),
               ""]
        from harness.measure.plots import scatter_frontier

        path = out_dir / f"efficiency-{dataset}-{tok}.png".replace("/", "_").replace(":", "_")
        scatter_frontier(path, f"{dataset} ({tok}): validation ppl vs training FLOPs",
                         [(f"{r['model']} ({r.get('budget')})", [c["train_flops"] for c in r["protocol"]["curve"]],
                           [c["ppl"] for c in r["protocol"]["curve"]]) for r in recs],
                         frontier, "training FLOPs", "validation perplexity")
        plots[f"{dataset}/{tok}"] = str(path)
        md += [f"![ppl vs FLOPs]({path.name})", ""]
        md += _plots(recs, "efficiency_plot", out_dir)
    return md, plots


def write_perf_reports(results_dir: Path, records: list[dict[str, Any]]) -> list[Path]:
    """Write the reports whose benchmarks have records (atomically); return the files written."""
    from harness.files import atomic_write

    results_dir = Path(results_dir)
    written = []
    for name, lines in (("throughput", throughput_md(records, results_dir)),
                        ("memory", memory_md(records, results_dir))):
        if lines:
            path = results_dir / f"{name}.md"
            atomic_write(path, "\n".join([f"# {name}", ""] + lines))
            written.append(path)
    eff, plots = efficiency_md(records, results_dir)
    if eff:
        path = results_dir / "efficiency.md"
        atomic_write(path, "\n".join(["# efficiency", ""] + eff))
        written += [path] + [Path(p) for p in plots.values()]
    return written


def main(argv: list[str] | None = None) -> int:
    import sys

    from harness.results.records import latest, read_results

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m harness.reporting.perf RESULTS_DIR [MORE_RESULTS_DIRS ...]", file=sys.stderr)
        return 2
    records = [r for d in args for r in latest(read_results(Path(d)))]
    written = write_perf_reports(Path(args[0]), records)
    if not written:
        print(f"no throughput, memory or efficiency records in {', '.join(args)}", file=sys.stderr)
        return 1
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
