"""Sweeps that outgrow one process (docs/scaling.md): xdist workers that group cells by trained weights, every cell
a Ray task, and a killed run resumed — each giving the records of one uninterrupted serial run."""
import json
import shutil
import signal
import subprocess
import textwrap
import time

import pytest

from harness.launch.devices import split_threads, usable_cores, worker_device, worker_index
from harness.launch.resume import (
    cells_done,
    final_records,
    load_plan,
    restore_options,
    run_records,
    write_plan,
)
from harness.options import OptionsError
from harness.results.records import RecordWriter, comparable, merge_worker_files, read_records
from tests.helpers import REPO, TOY, bench_cmd, bench_env, run_benches

# 4 cells on 2 sets of trained weights (seed 0, seed 1), each shared by an fp32 and an int4 cell.
SWEEP = ("-m", "quantization", "--models", TOY, "--budget", "micro", "--bits", "fp32,int4",
         "--quant-include", "embeddings,head", "--seeds", "0,1")
N_CELLS = 4


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    base = tmp_path_factory.mktemp("serial")
    proc = run_benches(base / "r", base / "c", *SWEEP)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return base


def _by_cell(records, provenance: bool = True) -> dict[str, dict]:
    """Records keyed by cell id, without what differs between equivalent runs (and, unless ``provenance``, without
    where the weights came from: memory, disk cache or training)."""
    out = {}
    for rec in records:
        c = comparable(rec)
        if not provenance:
            c["train"].pop("source")
        assert c["cell_id"] not in out, f"two records of {c['cell_id']}"
        out[c["cell_id"]] = c
    return out


def _trainings(records) -> dict[str, list[str]]:
    """Weights key -> the ``train.source`` of each of its records, in order."""
    out: dict[str, list[str]] = {}
    for rec in records:
        out.setdefault(rec["config_hash"], []).append(rec["train"]["source"])
    return out


# ---------------------------------------------------------------------------------------------------- xdist


def test_xdist_trains_each_weights_key_once_on_one_worker(serial, tmp_path):
    """``-n auto`` (2 workers here) groups the cells of one weights key on one worker (xdist's loadgroup, chosen by
    lmbench): it trains them once and reuses them from memory; the records equal the serial run's."""
    env = bench_env() | {"PYTEST_XDIST_AUTO_NUM_WORKERS": "2"}
    cmd = bench_cmd(tmp_path / "r", tmp_path / "c", *SWEEP, "-n", "auto", "-vv")  # -q -vv: verbose
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "@train:" in proc.stdout  # xdist ran them as groups
    par = read_records(tmp_path / "r" / "records.jsonl")
    assert len(par) == N_CELLS and all("@" not in r["test_id"] for r in par)
    for key, sources in _trainings(par).items():
        assert sorted(sources) == ["memo", "trained"], (key, sources)
        assert len({r["worker"] for r in par if r["config_hash"] == key}) == 1
    assert {r["worker"] for r in par} == {"gw0", "gw1"}
    assert {r["environment"]["threads"] for r in par} == {split_threads(2)}  # the cores split between workers
    ser = read_records(serial / "r" / "records.jsonl")
    assert _by_cell(par) == _by_cell(ser)


def test_launch_devices():
    assert worker_index("gw3") == 3 and worker_index("ray-1a2b3c4d-4242") == 0 and worker_index(None) == 0
    import torch

    # a Ray task sees only the GPU Ray granted it: always its first visible device
    assert worker_device("cuda", "ray-1a2b3c4d-4242", n_gpus=1) == torch.device("cuda", 0)
    assert worker_device("cuda", "gw3", n_gpus=2) == torch.device("cuda", 1)
    assert split_threads(2, cpu_count=usable_cores()) == max(1, usable_cores() // 2)


# ------------------------------------------------------------------------------------------------------ Ray


def test_ray_launcher_gives_the_records_of_a_serial_run(serial, tmp_path):
    """``--launcher ray`` on a local Ray instance (one CPU per cell: 2 workers on this 2-core machine): every cell
    a Ray task, reported per cell by pytest, records in the one results folder, equal to the serial run's. Cells
    sharing weights are chained after the one that trains them, which the others load from the shared cache."""
    import ray  # noqa: F401 - the dev extra installs Ray: without it this test fails, it never skips

    proc = run_benches(tmp_path / "r", tmp_path / "c", *SWEEP, "--launcher", "ray", "-vv")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Ray on a local instance" in proc.stdout and f"{N_CELLS} passed" in proc.stdout
    assert proc.stdout.count("PASSED") == N_CELLS  # pytest's own per-cell lines
    recs = read_records(tmp_path / "r" / "records.jsonl")
    assert len(recs) == N_CELLS and all(r["worker"].startswith("ray-") for r in recs)
    assert len({r["worker"] for r in recs}) == 2  # two Ray workers ran cells at once
    for key, sources in _trainings(recs).items():
        assert sorted(sources) == ["cache", "trained"], (key, sources)
    ser = read_records(serial / "r" / "records.jsonl")
    assert _by_cell(recs, provenance=False) == _by_cell(ser, provenance=False)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["n_records"] == N_CELLS and summary["counts"] == {"passed": N_CELLS}


OUTCOMES = textwrap.dedent("""
    import pytest

    @pytest.fixture
    def broken():
        raise RuntimeError("fixture broke")

    @pytest.mark.perplexity
    @pytest.mark.parametrize("mode", ["pass", "fail", "skip", "xfail"])
    def test_outcome(bench, mode):
        if mode == "fail":
            pytest.fail("missed its target", pytrace=False)
        if mode == "skip":
            pytest.skip("not here")
        if mode == "xfail":
            pytest.xfail("known")

    @pytest.mark.perplexity
    def test_setup_error(bench, broken):
        pass
""")


def test_ray_keeps_every_pytest_outcome_per_cell(tmp_path):
    """Failures, skips, xfails and setup errors cross the Ray task boundary as pytest's own reports: the summary
    line, exit code and record statuses a serial run gives (tests/test_options.py checks the serial mapping)."""
    (tmp_path / "test_outcomes.py").write_text(OUTCOMES)
    cmd = bench_cmd(tmp_path / "r", tmp_path / "c", "--launcher", "ray", "--ray-cpus", "1")
    cmd[cmd.index("benches")] = "test_outcomes.py"
    env = bench_env() | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error" in proc.stdout.splitlines()[-1], proc.stdout
    recs = {r["test_id"].rsplit("::", 1)[1]: (r["status"], r["reason"])
            for r in read_records(tmp_path / "r" / "records.jsonl")}
    assert recs == {
        "test_outcome[pass]": ("passed", None), "test_outcome[fail]": ("failed", "missed its target"),
        "test_outcome[skip]": ("skipped", "not here"), "test_outcome[xfail]": ("xfailed", "known"),
        "test_setup_error": ("error", "RuntimeError: fixture broke"),
    }


# --------------------------------------------------------------------------------------------------- resume


def _wait_for_records(path, n, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed: {proc.stdout.read()}")
        time.sleep(0.02)
    raise AssertionError("no record appeared in time")


def test_resume_after_sigkill_gives_the_records_of_an_uninterrupted_run(serial, tmp_path):
    results, cache = tmp_path / "r", tmp_path / "c"
    proc = subprocess.Popen(bench_cmd(results, cache, *SWEEP), cwd=REPO, env=bench_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_records(results / "records.jsonl", 1, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.stdout.close()
    killed = read_records(results / "records.jsonl")
    assert 1 <= len(killed) < N_CELLS
    # Only the folder: the plan restores the options and the selection of the run.
    resumed = run_benches(results, cache, "--resume", str(results), "-rA")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{len(killed)} of {N_CELLS} cells have a final record" in resumed.stdout
    assert f"{N_CELLS - len(killed)} passed" in resumed.stdout
    recs = read_records(results / "records.jsonl")
    assert recs[:len(killed)] == killed  # appended, nothing rewritten
    assert _by_cell(recs, provenance=False) == _by_cell(read_records(serial / "r" / "records.jsonl"),
                                                        provenance=False)
    assert {r["run_id"] for r in recs} == {killed[0]["run_id"]}
    summary = json.loads((results / "summary.json").read_text())
    assert summary["n_records"] == N_CELLS and summary["counts"] == {"passed": N_CELLS}


def test_resume_failed_reruns_only_failures_and_the_summary_covers_the_run(serial, tmp_path):
    results = tmp_path / "r"
    shutil.copytree(serial / "r", results)
    recs = read_records(results / "records.jsonl")
    recs[1] |= {"status": "error", "reason": "RuntimeError: CUDA error: an illegal memory access"}
    (results / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    done = run_benches(results, serial / "c", "--resume", str(results))
    assert done.returncode == 0 and "passed" not in done.stdout.splitlines()[-1], done.stdout + done.stderr
    assert len(read_records(results / "records.jsonl")) == N_CELLS  # every cell had a record: nothing ran

    again = run_benches(results, serial / "c", "--resume", str(results), "--resume-failed")
    assert again.returncode == 0 and "1 passed" in again.stdout, again.stdout + again.stderr
    after = read_records(results / "records.jsonl")
    assert len(after) == N_CELLS + 1 and after[-1]["cell_id"] == recs[1]["cell_id"] and after[-1]["status"] == "passed"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["n_records"] == N_CELLS and summary["counts"] == {"passed": N_CELLS}


def test_resume_bookkeeping(tmp_path):
    write_plan(tmp_path, "run-1", {"budget": "micro", "seeds": "0-3", "device": "auto"}, "cpu",
               [("c|seed=0", "t0"), ("c|seed=1", "t1")], ["benches"])
    plan = load_plan(tmp_path)
    assert plan["run_id"] == "run-1" and plan["cells"] == {"c|seed=0": "t0", "c|seed=1": "t1"}
    defaults = {"budget": "smoke", "seeds": "0", "device": "auto", "data_dir": None}
    raw = restore_options({"budget": "smoke", "seeds": "0", "device": "auto", "data_dir": "/d", "results_dir": None},
                          defaults, plan, tmp_path)
    assert raw["budget"] == "micro" and raw["seeds"] == "0-3" and raw["device"] == "cpu" and raw["data_dir"] == "/d"
    with pytest.raises(OptionsError, match="--budget small differs from the run's --budget micro; drop it"):
        restore_options({"budget": "small", "seeds": "0", "device": "auto"}, defaults, plan, tmp_path)

    RecordWriter(tmp_path / "records.gw0.jsonl").write({"cell_id": "a", "status": "error", "finished_at": "1"})
    RecordWriter(tmp_path / "records.jsonl").write({"cell_id": "b", "status": "passed", "finished_at": "1"})
    with open(tmp_path / "records.jsonl", "a") as f:
        f.write('{"cell_id": "c", "sta')  # a writer killed mid-line: the next record starts on a fresh line
    RecordWriter(tmp_path / "records.jsonl").write({"cell_id": "a", "status": "passed", "finished_at": "2"})
    with pytest.warns(UserWarning, match="incomplete record"):
        recs = run_records(tmp_path)
    assert [r["cell_id"] for r in recs] == ["b", "a", "a"]  # the resumed record survived the torn line
    assert set(cells_done(recs, rerun_failed=False)) == set(cells_done(recs, rerun_failed=True)) == {"a", "b"}
    assert cells_done([recs[0], recs[2]], rerun_failed=True) == {"b": "passed"}  # a's only record is an error
    assert sorted((r["cell_id"], r["status"]) for r in final_records(recs)) == [("a", "passed"), ("b", "passed")]
    with pytest.warns(UserWarning):
        merged = merge_worker_files(tmp_path)  # keeps what records.jsonl held, adds the worker file's, once each
    assert sorted((r["cell_id"], r["status"]) for r in merged) == [("a", "error"), ("a", "passed"), ("b", "passed")]


# --------------------------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args,message", [
    (["--launcher", "slurm"], "--launcher 'slurm': valid launchers: local"),
    (["--ray-address", "10.0.0.1:6379"], "--ray-address only applies to Ray: add --launcher ray"),
    (["--resume-failed"], "--resume-failed needs --resume RESULTS_DIR"),
    (["--resume", "/no/such/run"], "--resume /no/such/run: no such folder; give the results folder"),
    (["--launcher", "ray", "-n", "2"], "--launcher ray and -n are two ways to run cells in parallel: drop -n"),
])
def test_scaling_mistakes_are_one_usage_line(inproc, args, message):
    result = inproc.runpytest("--results-dir", str(inproc.results), *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and message in errors[0], result.errlines
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_resume_mistakes_name_the_fix(inproc, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = inproc.runpytest("--resume", str(empty))
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "it is not an lmbench results folder" in result.stderr.str()
    write_plan(tmp_path / "run", "run-1", {"budget": "micro"}, "cpu", [("c", "t")], ["benches"])
    result = inproc.runpytest("--resume", str(tmp_path / "run"), "--budget", "small")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--budget small differs from the run's --budget micro; drop it" in result.stderr.str()
    result = inproc.runpytest("--resume", str(tmp_path / "run"), "--results-dir", str(tmp_path / "other"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "drop --results-dir" in result.stderr.str()


def test_launcher_ray_without_ray_says_how_to_install_it(inproc, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    result = inproc.runpytest("--launcher", "ray")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--launcher ray needs Ray, which is not installed here: pip install 'lmbench[ray]'" in result.stderr.str()
