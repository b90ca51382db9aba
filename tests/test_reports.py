"""Allure results, the pytest-html report and summary.html of one real (in-process) run: every cell — skipped ones
included — carries its record, labels and parameters; plots are embedded; the pages need no network."""
import json
import os
import re
import shutil
import subprocess

import pytest

from harness.options import TARGETS_DIR
from tests.helpers import TOY

BENCH = """
import pytest
from harness.measure import perplexity
from harness.measure.result import Result


@pytest.mark.perplexity
def test_perplexity(cell, provision, bench):
    bench.finalize(perplexity.measure(provision(cell)))


@pytest.mark.perplexity
@pytest.mark.gpu
def test_perplexity_on_gpu(cell, provision, bench):
    bench.finalize(perplexity.measure(provision(cell)))


@pytest.mark.synthetic
def test_synthetic_plot(bench, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    path = tmp_path / "curve.png"
    fig.savefig(path)
    plt.close(fig)
    bench.finalize(Result(metrics={"accuracy": 0.75}, subject="toy-task", target_section="toy",
                          artefacts={"accuracy curve": str(path)}))
"""


@pytest.fixture
def run(inproc, tmp_path):
    """One run with --alluredir and --html; a skipped GPU cell and a benchmark's own plot among the records."""
    targets = tmp_path / "targets"
    shutil.copytree(TARGETS_DIR, targets)
    (targets / "synthetic.toml").write_text('version = 1\n[toy]\nmin_accuracy = 0.5\n[report]\nheadline = ["accuracy"]\n')
    inproc.makepyfile(test_bench=BENCH)
    result = inproc.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", "--models", TOY, "--budget", "micro",
                              "--targets-dir", str(targets), "--results-dir", str(tmp_path / "r"),
                              "--alluredir", str(tmp_path / "allure"), "--html", str(tmp_path / "report.html"),
                              "--self-contained-html", "-rs")
    return result, tmp_path


def _allure_results(folder):
    return [json.loads(p.read_text()) for p in folder.glob("*-result.json")]


def test_reports_of_one_run(run):
    """One run feeds three reports (a run costs seconds, so they share it)."""
    result, tmp = run
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=2, skipped=1)
    check_allure(tmp)
    check_pytest_html(tmp)
    check_summary_html(tmp)


def check_allure(tmp):
    """Every cell, skipped ones too, is one Allure test with labels, parameters, the record and its plots."""
    tests = {t["name"].split("[")[0]: t for t in _allure_results(tmp / "allure")}
    assert set(tests) == {"test_perplexity", "test_perplexity_on_gpu", "test_synthetic_plot"}
    for name, t in tests.items():
        names = [a["name"] for a in t.get("attachments", [])]
        assert "lmbench record" in names, f"{name} has no record attached"  # skipped cells too
        record = json.loads((tmp / "allure" / next(a["source"] for a in t["attachments"]
                                                   if a["name"] == "lmbench record")).read_text())
        assert record["test_id"].endswith(t["name"]) or t["name"] in record["test_id"]
    ppl = tests["test_perplexity"]
    labels = {(lb["name"], lb["value"]) for lb in ppl["labels"]}
    assert {("benchmark", "perplexity"), ("model", TOY), ("dataset", "synthetic-markov"), ("bits", "fp32"),
            ("seq_len", "64")} <= labels
    params = {p["name"]: p["value"] for p in ppl["parameters"]}
    assert params["cell"].strip("'").startswith("perplexity|model=") and params["seed"].strip("'") == "0"
    assert tests["test_perplexity_on_gpu"]["status"] == "skipped"
    plot = tests["test_synthetic_plot"]
    assert any(a["name"] == "accuracy curve" and a["type"] == "image/png" for a in plot["attachments"])
    env = (tmp / "allure" / "environment.properties").read_text()
    assert re.search(r"^torch=\S+", env, re.M) and "lmbench.budget=micro" in env and re.search(r"^device=cpu", env, re.M)


def check_pytest_html(tmp):
    page = (tmp / "report.html").read_text()
    assert "lmbench metrics" in page  # the results-table column
    assert "ppl_over_floor" in page and "accuracy 0.75" in page
    assert "data:image/png;base64," in page  # the plot, embedded (self-contained)


def check_summary_html(tmp):
    page = (tmp / "r" / "summary.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)  # nothing to fetch
    assert page.count("<table") >= 4 and "Leaderboard" in page and "Skipped" in page
    images = re.findall(r'src="data:image/png;base64,', page)
    assert len(images) >= 3  # the headline plot, the training-loss plot, the benchmark's own plot
    assert "accuracy curve" in page and "needs CUDA" in page
    md = (tmp / "r" / "summary.md").read_text()
    assert "## Skipped" in md and "1 × needs CUDA" in md
    assert "`pytest " in md and "commit " in md and "device cpu" in md and "budget micro" in md


# ------------------------------------------------------------------------------------ Allure, rendered offline

ALLURE = ["npx", "--yes", "--prefer-offline", "allure-commandline"]


def _allure_cli() -> list[str] | None:
    """The Allure command line from npm (it bundles Allure 2, which runs on Java), installing Java and npm with
    apt-get where they are missing and that is possible; None when the tool cannot be had here."""
    missing = [pkg for tool, pkg in (("java", "default-jre-headless"), ("npx", "npm")) if not shutil.which(tool)]
    if missing and shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True, timeout=900, env=env)
    if not (shutil.which("java") and shutil.which("npx")):
        return None
    try:
        probe = subprocess.run([*ALLURE, "--version"], capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, OSError):
        return None
    return ALLURE if probe.returncode == 0 else None


@pytest.mark.slow
def test_allure_results_render_offline(run):
    """docs/reports.md's command renders the run's Allure results to one HTML file; headless Chromium opens it from
    disk and shows every cell and the environment."""
    cli = _allure_cli()
    if cli is None:
        pytest.skip("the Allure command line (npm allure-commandline, with Java) is not available here")
    result, tmp = run
    assert result.ret == 0, result.stdout.str()
    out = tmp / "allure-report"
    proc = subprocess.run([*cli, "generate", str(tmp / "allure"), "-o", str(out), "--clean", "--single-file"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and (out / "index.html").is_file(), proc.stdout + proc.stderr
    from tests.test_summary import _chromium

    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium is not installed and `apt-get install chromium` was not possible here")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", (out / "index.html").as_uri()], capture_output=True, text=True,
                         timeout=180).stdout
    shown = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    text = " ".join(re.sub(r"<[^>]+>", " ", shown).split())  # what the page renders, not the data it embeds
    assert "3 test cases" in text, text[:2000]
    assert "Environment" in text and re.search(r"torch \S+", text) and "perplexity" in text and "synthetic" in text
