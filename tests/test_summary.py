"""Summaries from records of any benchmark: intervals, comparisons, skips grouped by reason, headline metrics from the
targets files, the terminal table, ``latest``, and (slow) summary.html rendered by headless Chromium."""
import json
import math
import os
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.options import TARGETS_DIR
from harness.reporting.analysis import analyse
from harness.reporting.latest import point_latest
from harness.reporting.summary import aggregate_seeds, write_summary
from harness.reporting.terminal import lines


def _rec(model, seed, ppl, status="passed", dataset="synthetic-markov", reason=None, **extra):
    cid = (f"perplexity|model={model}|dataset={dataset}|tokenizer=byte|seed={seed}|budget=smoke|seq_len=128|"
           f"bits=fp32|device=cpu")
    return {"benchmark": "perplexity", "test_id": f"benches/test_perplexity.py::test_perplexity[{model}-s{seed}]",
            "cell_id": cid, "model": model, "dataset": dataset, "tokenizer": "byte", "budget": "smoke",
            "seq_len": 128, "bits": "fp32", "seed": seed, "status": status, "reason": reason,
            "metrics": {"ppl": ppl, "ppl_over_floor": ppl / 8.477, "bits_per_byte": math.log2(ppl)},
            "params": {"total": 120000, "non_embedding": 100096},
            "train": {"tokens": 399360, "losses": [3.0 - 0.01 * i for i in range(50)]},
            "environment": {"git_commit": "abc123", "device": "cpu", "torch": "2.13.0", "python": "3.11",
                            "cpu": "Xeon", "torch_threads": 2}} | extra


def _kernel(mode, speedup):
    return {"benchmark": "kernels", "test_id": f"benches/test_bk_core.py::test_bk_core_speedup_vs_reference[{mode}]",
            "cell_id": f"kernels/bk_core_speedup_vs_reference|device=cpu|mode={mode}", "model": f"bk-core-{mode}",
            "seq_len": 4096, "status": "passed",
            "metrics": {"speedup_vs_reference": speedup, "speedup_vs_fallback": 9.5, "fused_fp32_fwd_bwd_ms": 0.57}}


def _skip(i, reason):
    return {"benchmark": "kernels", "test_id": f"benches/test_bk_core.py::test_bk_core_gpu_bandwidth[{i}]",
            "status": "skipped", "reason": reason}


RUN = ([_rec("transformer", s, p) for s, p in enumerate([9.27, 9.25, 9.29])]
       + [_rec("mamba", s, p) for s, p in enumerate([9.03, 8.99, 9.06])]
       + [_rec("llama", 0, 9.28)]
       + [_kernel("causal", 588.0), _kernel("bidirectional", 446.0)]
       + [_skip(i, "needs CUDA, which torch does not see here") for i in range(6)]
       + [_rec("resnet-bk", 0, 30.0, status="failed", reason="ppl_over_floor = 3.5, target <= 1.5")])


def test_seed_statistics_textbook_example():
    """[1, 2, 3, 4]: mean 2.5, sample sd sqrt(5/3), t(0.975, 3) = 3.182446 (printed tables), half-width 2.054."""
    (row,) = aggregate_seeds([_rec("m", i, v) for i, v in enumerate([1.0, 2.0, 3.0, 4.0])], metrics=("ppl",))
    s = row["ppl"]
    assert s["mean"] == pytest.approx(2.5) and s["std"] == pytest.approx(math.sqrt(5 / 3))
    half = 3.182446 * math.sqrt(5 / 3) / 2
    assert s["ci95"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(1.0, 1e4, allow_nan=False), min_size=2, max_size=12))
def test_group_statistics_match_an_independent_implementation(values):
    """Against Python's ``statistics`` module (not numpy, which the analysis uses)."""
    rep = analyse([_rec("m", i, v) for i, v in enumerate(values)], TARGETS_DIR)
    (group,) = rep.benchmarks[0].groups
    s = group.stats["ppl"]
    assert s.n == len(values) and s.mean == pytest.approx(statistics.fmean(values), rel=1e-9)
    assert s.std == pytest.approx(statistics.stdev(values), rel=1e-6, abs=1e-9)
    lo, hi = s.t_ci
    assert lo <= s.mean <= hi and hi - lo == pytest.approx(2 * (s.mean - lo))


def test_analysis_of_a_mixed_run():
    rep = analyse(RUN, TARGETS_DIR, run_id="r", command="pytest benches")
    bench = {b.name: b for b in rep.benchmarks}
    ppl = bench["perplexity"]
    assert ppl.spec.headline[:2] == ("ppl", "ppl_over_floor")  # declared in fixtures/targets/perplexity.toml
    assert [g.axes["model"] for g in ppl.groups] == ["mamba", "transformer", "llama", "resnet-bk"]  # best first
    comps = {c.model: c.result for c in ppl.comparisons}
    assert set(comps) == {"mamba", "llama"} and {c.reference for c in ppl.comparisons} == {"transformer"}
    assert comps["mamba"].n == 3 and comps["mamba"].p_t_holm is not None
    assert comps["llama"].verdict().startswith("n = 1: one seed, no test possible")
    kernels = bench["kernels"]
    assert kernels.metrics[:2] == ["speedup_vs_reference", "speedup_vs_fallback"]  # no longer blank
    assert not kernels.comparisons  # [report] compare = []
    assert rep.skipped == [("needs CUDA, which torch does not see here", 6, ["kernels"])]
    assert [r["model"] for r in rep.not_passed] == ["resnet-bk"]


def test_summary_files_show_headlines_intervals_comparisons_and_skips_once(tmp_path):
    write_summary(tmp_path, RUN, "r", {"budget": "smoke"}, command="pytest benches --seeds 0,1,2")
    md = (tmp_path / "summary.md").read_text()
    assert "Command: `pytest benches --seeds 0,1,2`" in md
    assert "budget smoke · commit abc123 · device cpu (Xeon, 2 threads)" in md
    assert "| mamba | 0,1,2 | 9.027 ± 0.087 (n = 3) |" in md  # mean ± t half-width, with n
    assert "### Intervals over seeds (95%)" in md and "bootstrap (BCa)" in md
    assert "### Model comparisons against transformer" in md and "| mamba | transformer | 3 |" in md
    assert "n = 1: one seed, no test possible" in md
    assert "588 (n = 1)" in md and "100096" in md.replace(",", "") and "399360" in md.replace(",", "")
    assert md.count("needs CUDA") == 1 and "- 6 × needs CUDA" in md  # skips: one line per reason
    assert "`benches/test_perplexity.py::test_perplexity[resnet-bk-s0]`: failed — ppl_over_floor" in md
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_records"] == len(RUN) and summary["counts"]["skipped"] == 6
    stats = summary["benchmarks"]["perplexity"]["groups"][0]["stats"]["ppl"]
    assert stats["n"] == 3 and len(stats["t_ci"]) == 2 and len(stats["boot_ci"]) == 2
    assert (tmp_path / "summary.html").read_text().count('src="data:image/png;base64,') >= 3


def test_terminal_table_has_numbers_not_only_paths():
    out = "\n".join(lines(analyse(RUN, TARGETS_DIR)))
    assert "perplexity: mean ± 95% t-interval half-width over seeds (n)" in out
    assert "mamba" in out and "9.027 ± 0.087 (n = 3)" in out and "588 (n = 1)" in out
    assert out.count("needs CUDA") == 1 and "skipped 6 × needs CUDA" in out


def test_latest_points_at_the_newest_run(tmp_path):
    root = tmp_path / "results"
    for run_id in ("run-1", "run-2"):
        (root / run_id).mkdir(parents=True)
        point_latest(root, root / run_id)
        assert (root / "latest").resolve() == (root / run_id).resolve()
    assert os.readlink(root / "latest") == "run-2"  # relative: the repository can move
    assert point_latest(root, tmp_path / "elsewhere") is None  # --results-dir outside the root: untouched
    assert sorted(p.name for p in root.iterdir()) == ["latest", "run-1", "run-2"]  # no temporary left


def test_summary_cli_rebuilds_a_folder(tmp_path):
    from harness.__main__ import main
    from harness.results.records import RecordWriter

    w = RecordWriter(tmp_path / "records.jsonl")
    for r in RUN:
        w.write(r)
    assert main(["summary", str(tmp_path)]) == 0
    assert "## perplexity" in (tmp_path / "summary.md").read_text()


# --------------------------------------------------------------------------------------------------- Chromium

CHECK = """<script>
window.addEventListener('load', () => {
  const visible = el => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
                          return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const tables = [...document.querySelectorAll('table')].filter(t => !t.closest('details'));
  const imgs = [...document.querySelectorAll('img')];
  const out = {tables: tables.length, tablesVisible: tables.filter(visible).length,
               rows: tables.reduce((n, t) => n + t.rows.length, 0), images: imgs.length,
               imagesLoaded: imgs.filter(i => i.complete && i.naturalWidth > 0 && visible(i)).length};
  const pre = document.createElement('pre'); pre.id = 'lmbench-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str | None:
    """Chromium on PATH, else installed now with apt-get (Debian's package); None when that is impossible."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=600, env=env,
                           check=True)
        except (subprocess.SubprocessError, OSError):
            return None
    return shutil.which("chromium")


@pytest.mark.slow
def test_summary_html_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium is not installed and `apt-get install chromium` was not possible here")
    write_summary(tmp_path, RUN, "r", {"budget": "smoke"}, command="pytest benches")
    page = tmp_path / "summary.html"
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    check = json.loads(dom.split('<pre id="lmbench-check">', 1)[1].split("</pre>", 1)[0])
    assert check["tables"] >= 5 and check["tablesVisible"] == check["tables"] and check["rows"] > 20, check
    assert check["images"] >= 3 and check["imagesLoaded"] == check["images"], check
    shot = tmp_path / "summary.png"
    subprocess.run(flags + ["--window-size=1400,2600", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.std() > 0.05  # a page with content, not a blank or error screen
    print(f"screenshot: {shot}")
    keep = os.environ.get("LMBENCH_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep)
