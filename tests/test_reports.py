"""Allure results, the pytest-html report and summary.html of one real (in-process) run: every cell — skipped ones
included — carries its record, labels and parameters; plots are embedded; the pages need no network."""
import json
import re
import shutil

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
