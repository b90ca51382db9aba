import json
import signal
import subprocess
import time

import pytest

from harness.results.records import Record, RecordWriter, comparable, merge_worker_files, read_records, worker_file
from tests.helpers import REPO, TOY, bench_cmd, bench_env


def test_writer_appends_complete_lines(tmp_path):
    w = RecordWriter(tmp_path / "r.jsonl")
    w.write(Record(benchmark="b", test_id="t1", metrics={"x": float("nan")}))
    w.write(Record(benchmark="b", test_id="t2"))
    recs = read_records(tmp_path / "r.jsonl")
    assert [r["test_id"] for r in recs] == ["t1", "t2"]
    assert recs[1] == Record(benchmark="b", test_id="t2").to_dict()  # every field survives the round trip


def test_truncated_last_line_is_skipped_not_fatal(tmp_path):
    path = tmp_path / "r.jsonl"
    RecordWriter(path).write(Record(benchmark="b", test_id="t1"))
    with open(path, "a") as f:
        f.write('{"benchmark": "b", "test_')
    with pytest.warns(UserWarning, match="incomplete record"):
        assert len(read_records(path)) == 1


def test_merge_sorts_and_keeps_worker_files(tmp_path):
    RecordWriter(worker_file(tmp_path, "gw1")).write(Record(benchmark="b", test_id="t2"))
    RecordWriter(worker_file(tmp_path, "gw0")).write(Record(benchmark="b", test_id="t1"))
    merged = merge_worker_files(tmp_path)
    assert [r["test_id"] for r in merged] == ["t1", "t2"]
    assert worker_file(tmp_path, "gw0").exists()
    assert read_records(tmp_path / "records.jsonl") == merged


def test_comparable_drops_timings():
    a = Record(benchmark="b", test_id="t", metrics={"ppl": 2.0, "wall_s": 1.0}, duration_s=3.0).to_dict()
    b = Record(benchmark="b", test_id="t", metrics={"ppl": 2.0, "wall_s": 9.0}, duration_s=4.0).to_dict()
    assert comparable(a) == comparable(b)


def _wait_for_records(path, n, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"benchmark run ended early: {proc.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError("no record appeared in time")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_keeps_earlier_records(tmp_path, sig):
    """A run killed (SIGKILL) or interrupted (Ctrl-C) mid-way keeps every record measured before."""
    results = tmp_path / "results"
    cmd = bench_cmd(results, tmp_path / "cache", "-m", "perplexity", "--models", TOY, "--seeds", "0-30")
    proc = subprocess.Popen(cmd, cwd=REPO, env=bench_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        _wait_for_records(results / "records.jsonl", 2, proc)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    recs = read_records(results / "records.jsonl")
    assert 2 <= len(recs) < 31
    assert all(r["status"] == "passed" and r["metrics"]["ppl"] > 0 for r in recs)
    if sig == signal.SIGINT:  # a clean interrupt still writes the summary of what was measured
        summary = json.loads((results / "summary.json").read_text())
        assert summary["n_records"] == len(recs)
