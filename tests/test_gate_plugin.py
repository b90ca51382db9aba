"""The gate, the reports and the baseline options as a user meets them in a pytest run (in-process, a toy model at the
micro budget, a one-function perplexity benchmark so no kernel op is registered twice)."""
import json

import pytest

from harness.results.records import read_records
from tests.helpers import REPO, TOY

BENCH = """
import pytest
from harness.measure import perplexity


@pytest.mark.perplexity
def test_perplexity(cell, provision, bench):
    bench.finalize(perplexity.measure(provision(cell)))
"""
ARGS = ("-p", "no:randomly", "-p", "no:cacheprovider", "-m", "perplexity", "--models", TOY, "--budget", "micro")


def run(inproc, results, *args):
    inproc.makepyfile(test_bench=BENCH)
    return inproc.runpytest(*ARGS, "--results-dir", str(results), *args)


def _edit(path, seed, factor):
    data = json.loads(path.read_text())
    (cid,) = [c for c in data["cells"] if f"|seed={seed}|" in c]
    data["cells"][cid]["metrics"]["ppl"] *= factor
    path.write_text(json.dumps(data, indent=1))
    return data["cells"][cid]["metrics"]["ppl"] / factor


def test_baseline_gate_lifecycle(inproc, tmp_path):
    """Write a baseline, pass against it, fail one seed with one line after its number is made 20% better, restore it
    with --update-baseline; then an improvement and noise within the tolerance pass, and a seed the baseline lacks
    is reported as new."""
    base = tmp_path / "baselines" / "cpu.json"
    r = run(inproc, tmp_path / "r1", "--seeds", "0,1", "--baseline", str(base), "--update-baseline")
    assert r.ret == 0, r.stdout.str()
    data = json.loads(base.read_text())
    assert data["schema"] == "lmbench-baseline" and len(data["cells"]) == 2
    assert data["meta"]["command"].startswith("pytest ") and "--update-baseline" in data["meta"]["command"]
    r.stdout.fnmatch_lines(["*baseline written: *cpu.json (2 cells from this run, 2 in the file)*"])

    r = run(inproc, tmp_path / "r2", "--seeds", "0,1", "--baseline", str(base))
    assert r.ret == 0, r.stdout.str()
    assert {rec["gate"]["status"] for rec in read_records(tmp_path / "r2" / "records.jsonl")} == {"ok"}
    r.stdout.fnmatch_lines(["*gate: 2 cells against *cpu.json: 2 ok.*"])

    measured = _edit(base, 1, 0.8)
    r = run(inproc, tmp_path / "r3", "--seeds", "0,1", "--baseline", str(base))
    assert r.ret == 1
    r.assert_outcomes(passed=1, failed=1)
    recs = {rec["seed"]: rec for rec in read_records(tmp_path / "r3" / "records.jsonl")}
    failed = recs[1]
    assert failed["status"] == "failed" and failed["gate"]["status"] == "regressed"
    assert failed["reason"].startswith("ppl regressed ") and "(+25.0% > 1% allowed) vs baseline " in failed["reason"]
    assert "\n" not in failed["reason"] and recs[0]["status"] == "passed"
    r.stdout.fnmatch_lines(["*ppl regressed * → * (+25.0% > 1% allowed) vs baseline *cpu.json"])

    r = run(inproc, tmp_path / "r4", "--seeds", "0,1", "--baseline", str(base), "--update-baseline")
    assert r.ret == 0  # not enforced while rewriting
    restored = json.loads(base.read_text())["cells"]
    (cid,) = [c for c in restored if "|seed=1|" in c]
    assert restored[cid]["metrics"]["ppl"] == pytest.approx(measured, rel=1e-6)

    # An improvement does not fail, nor does noise within the tolerance, nor a seed the baseline lacks.
    _edit(base, 0, 1.25)   # the run is 20% better than this baseline number
    _edit(base, 1, 1.005)  # 0.5% apart: noise within micro's 1% tolerance
    r = run(inproc, tmp_path / "r5", "--seeds", "0,1,2", "--baseline", str(base))
    assert r.ret == 0, r.stdout.str()
    statuses = {rec["seed"]: rec["gate"]["status"] for rec in read_records(tmp_path / "r5" / "records.jsonl")}
    assert statuses == {0: "improved", 1: "ok", 2: "new"}
    r.stdout.fnmatch_lines(["*gate: 3 cells against *cpu.json: 1 improved, 1 new, 1 ok.*"])
    md = (tmp_path / "r5" / "summary.md").read_text()
    assert "## Regression gate against" in md and "new" in md and "### Over seeds, paired with the baseline" in md


@pytest.mark.parametrize("content, words", [
    (None, "no such file"),
    ("{\"cells\": ", "is not valid JSON"),
    ('{"schema": "lmbench-baseline", "schema_version": 0, "cells": {}}', "schema version 0"),
])
def test_unusable_baseline_is_a_usage_error_naming_the_file_and_the_fix(inproc, tmp_path, content, words):
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    r = run(inproc, tmp_path / "r", "--baseline", str(path))
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    err = r.stderr.str()
    assert words in err and str(path) in err and "--update-baseline" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing ran


INTERRUPTED = BENCH + """

@pytest.mark.perplexity
def test_zz_interrupted():
    raise KeyboardInterrupt
"""


def test_an_interrupted_run_does_not_write_the_baseline(inproc, tmp_path, monkeypatch):
    """Ctrl-C (or CI's SIGTERM) after some cells passed: the baseline file is left as it was, and the run says so.
    (A subprocess: an in-process run would hand the KeyboardInterrupt to this test.)"""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # this checkout's harness, whatever is installed
    base = tmp_path / "cpu.json"
    inproc.makepyfile(test_bench=INTERRUPTED)
    r = inproc.runpytest_subprocess(*ARGS, "--results-dir", str(tmp_path / "r"), "--baseline", str(base),
                                    "--update-baseline", timeout=600)
    assert r.ret == pytest.ExitCode.INTERRUPTED
    assert [rec["status"] for rec in read_records(tmp_path / "r" / "records.jsonl")] == ["passed"]
    assert not base.exists()
    r.stdout.fnmatch_lines(["*baseline not written: the run was interrupted; *cpu.json is unchanged*"])


def test_update_baseline_needs_a_path(inproc, tmp_path):
    r = run(inproc, tmp_path / "r", "--update-baseline")
    assert r.ret == pytest.ExitCode.USAGE_ERROR and "--update-baseline needs --baseline PATH" in r.stderr.str()


def test_a_bad_gate_table_stops_the_run_before_anything_runs(inproc, tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "perplexity.toml").write_text(
        'version = 1\n[gate]\ntokens_per_s = { direction = "higher", tolerance = 0.1, kind = "speed-ratio" }\n')
    r = run(inproc, tmp_path / "r", "--targets-dir", str(targets), "--baseline", str(tmp_path / "b.json"),
            "--update-baseline")
    assert r.ret == pytest.ExitCode.USAGE_ERROR and "raw timing or rate" in r.stderr.str()


def test_terminal_prints_the_headline_table_and_summaries_exist(inproc, tmp_path):
    r = run(inproc, tmp_path / "r", "--seeds", "0,1")
    assert r.ret == 0
    r.stdout.fnmatch_lines([
        "*perplexity: mean ± 95% t-interval half-width over seeds (n)*budget micro*",
        "*ppl*ppl_over_floor*",
        f"*{TOY}*± * (n = 2)*2 passed*",
        "*summary: *summary.md · *summary.html",
    ])
    for name in ("summary.json", "summary.md", "summary.html"):
        assert (tmp_path / "r" / name).is_file()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    (group,) = summary["benchmarks"]["perplexity"]["groups"]
    assert group["stats"]["ppl"]["n"] == 2 and len(group["stats"]["ppl"]["t_ci"]) == 2
    assert summary["command"].startswith("pytest ")
