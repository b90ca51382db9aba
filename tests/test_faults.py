"""Issue 6: nothing measured is ever lost, and every bad input gets one clear line. One test per fault: each
reproduces it (as a hostile user or a failing machine would) and asserts what the user sees and what is kept
(docs/reliability.md is the table of the same faults).

Tests run as root, so a read-only folder is still writable: unwritable and full disks are simulated by
monkeypatching the system call that would fail (``os.open``/``os.write`` raising EACCES/ENOSPC for one path only), by
a path through a file, or by ``/dev/full`` (a real ENOSPC); each test's docstring says which.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cells import Cell
from harness.data import DataContext, load_corpus
from harness.errors import DataError, ModelContractError
from harness.measure.causality import check_causality
from harness.options import MAX_SEED, OptionsError, parse_options
from harness.provision.weights import WeightCache
from harness.reporting import summary as summary_tool
from harness.results.records import (
    Record,
    RecordWriter,
    latest,
    merge_worker_files,
    read_records,
    read_results,
    worker_file,
)
from harness.session import Session
from tests.helpers import REPO, TOY, bench_env

USAGE = pytest.ExitCode.USAGE_ERROR
PPL_TEST = """
import pytest
from harness.measure import perplexity

@pytest.mark.perplexity
def test_perplexity(cell, provision, bench):
    bench.finalize(perplexity.measure(provision(cell)))
"""


@pytest.fixture(autouse=True)
def _one_thread():
    """Toy models gain nothing from threads, and on a machine shared with parallel test runs two threads spinning
    against each other make a one-second training take thirty."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def usage_line(result) -> str:
    """The one ``ERROR:`` line of a usage error (and no traceback anywhere)."""
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == USAGE, out
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    return errors[0]


def no_traceback(result) -> str:
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    return out


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


# ================================================================================ records are never lost


def test_merging_only_adds_to_records_of_earlier_runs(tmp_path):
    """The end-of-session merge used to rewrite records.jsonl from the worker files alone, erasing records an
    earlier serial run had fsynced there."""
    RecordWriter(tmp_path / "records.jsonl").write(Record(benchmark="b", test_id="serial", cell_id="c0"))
    RecordWriter(worker_file(tmp_path, "gw0")).write(Record(benchmark="b", test_id="xdist", cell_id="c1"))
    merge_worker_files(tmp_path)
    merge_worker_files(tmp_path)  # a second merge adds nothing twice
    RecordWriter(tmp_path / "records.jsonl").write(Record(benchmark="b", test_id="serial-again", cell_id="c2"))
    assert [r["test_id"] for r in read_records(tmp_path / "records.jsonl")] == ["serial", "xdist", "serial-again"]


def test_torn_last_line_is_skipped_and_the_next_record_starts_on_a_fresh_line(tmp_path):
    """A kill or a full disk mid-write leaves a torn last line; the next record used to be appended onto it, and
    both became unreadable."""
    path = tmp_path / "records.jsonl"
    writer = RecordWriter(path)
    writer.write(Record(benchmark="b", test_id="t1"))
    with open(path, "a") as f:
        f.write('{"benchmark": "b", "test_id": "t2", "metr')
    writer.write(Record(benchmark="b", test_id="t3"))
    with pytest.warns(UserWarning, match=r"records.jsonl:2: skipped an incomplete record"):
        recs = read_records(path)
    assert [r["test_id"] for r in recs] == ["t1", "t3"]


def _make_results_unwritable(kind: str, tmp_path: Path, monkeypatch) -> Path:
    target = tmp_path / "results"
    if kind == "is a file":
        target.write_text("not a folder")
    elif kind == "cannot be created":
        (tmp_path / "blocker").write_text("a file where a folder should be")
        target = tmp_path / "blocker" / "results"
    else:  # read-only or full: the probe's open or write fails as it would there (root can write anywhere)
        target.mkdir()
        real_open, real_write = os.open, os.write
        code = errno.EACCES if kind == "read-only" else errno.ENOSPC

        def fake_open(path, *args, **kwargs):
            if kind == "read-only" and str(path).startswith(str(target)):
                raise PermissionError(code, os.strerror(code), str(path))
            return real_open(path, *args, **kwargs)

        def fake_write(fd, data):
            if kind == "full disk" and _fd_path(fd).startswith(str(target)):
                raise OSError(code, os.strerror(code))
            return real_write(fd, data)

        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "write", fake_write)
    return target


@pytest.mark.parametrize("kind", ["is a file", "cannot be created", "read-only", "full disk"])
def test_unwritable_results_folder_is_a_usage_error_before_any_training(inproc, tmp_path, monkeypatch, kind):
    """Today the measurement runs and an INTERNALERROR then loses it. Read-only and full are simulated by
    ``os.open``/``os.write`` raising EACCES/ENOSPC for paths in that folder only (root ignores permissions)."""
    target = _make_results_unwritable(kind, tmp_path, monkeypatch)
    inproc.makepyfile(PPL_TEST)
    result = inproc.runpytest("--results-dir", str(target), "--models", TOY, "--budget", "micro")
    line = usage_line(result)
    assert f"--results-dir: {target}" in line and "choose a writable folder" in line
    assert not (tmp_path / "cache" / "weights").exists()  # nothing was trained


def test_disk_full_mid_run_fails_that_test_and_keeps_every_earlier_record(inproc, monkeypatch):
    """The second record's write fails half-way with ENOSPC (``os.write`` patched for records.jsonl only: the first
    call writes half the line, the next raises), as on a disk that fills mid-run."""
    inproc.makepyfile(
        """
        import pytest

        @pytest.mark.perplexity
        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_record(bench, n):
            pass
        """
    )
    real_write, calls = os.write, {"n": 0}

    def fake_write(fd, data):
        if not _fd_path(fd).endswith("records.jsonl"):
            return real_write(fd, data)
        calls["n"] += 1
        if calls["n"] == 2:
            return real_write(fd, bytes(data)[: len(data) // 2])  # half the line reaches the disk...
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ...then it is full
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fake_write)
    result = inproc.runpytest("--results-dir", str(inproc.results), "-p", "no:randomly")
    out = no_traceback(result)
    result.assert_outcomes(passed=2, failed=1)
    lines = [ln for ln in out.splitlines() if "could not write this test's record" in ln]
    assert lines and all("No space left on device; every earlier record is intact" in ln for ln in lines)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torn fragment is left behind
        recs = read_records(inproc.results / "records.jsonl")
    assert [r["test_id"][-3:] for r in recs] == ["[1]", "[3]"]
    assert json.loads((inproc.results / "summary.json").read_text())["n_records"] == 2


def test_summary_on_a_full_disk_is_never_a_zero_byte_file(inproc):
    """A real ENOSPC: the summary's temp file is a symlink to /dev/full (in-process, so its name is known)."""
    inproc.makepyfile("import pytest\n\n@pytest.mark.perplexity\ndef test_one(bench):\n    pass\n")
    inproc.results.mkdir(parents=True)
    (inproc.results / f".summary.json.{os.getpid()}.tmp").symlink_to("/dev/full")
    result = inproc.runpytest("--results-dir", str(inproc.results))
    out = no_traceback(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the test passed, but the run has no summary
    assert "lmbench: could not write the summary in" in out and "No space left on device" in out
    assert not (inproc.results / "summary.json").exists()
    assert len(read_records(inproc.results / "records.jsonl")) == 1


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_unwritable_weight_cache_measures_without_caching_and_says_so(inproc, monkeypatch, fault):
    """A finished training run used to be thrown away when saving its weights failed. read-only: the cache's
    ``weights`` path is a file (no lock, no save possible); full: safetensors' save raises ENOSPC (patched)."""
    cache = Path(os.environ["LMBENCH_CACHE_DIR"])
    if fault == "read-only":
        cache.mkdir(parents=True)
        (cache / "weights").write_text("not a folder")
    else:
        import safetensors.torch

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(safetensors.torch, "save_model", full)
    inproc.makepyfile(PPL_TEST)
    result = inproc.runpytest("--results-dir", str(inproc.results), "--models", TOY, "--budget", "micro")
    no_traceback(result)
    result.assert_outcomes(passed=1)
    (rec,) = read_records(inproc.results / "records.jsonl")
    assert rec["status"] == "passed" and rec["metrics"]["ppl"] > 1 and rec["train"]["source"] == "trained"
    assert "trained weights not cached" in rec["notes"] and rec["train"]["cache_error"]
    if fault == "full":
        assert not list((cache / "weights").glob("*.tmp"))  # no half-written files left


def test_summary_tool_reads_worker_files_and_skips_bad_lines(tmp_path, capsys):
    """After SIGKILL of a ``-n 2`` controller, records sit only in worker files; a line that is not UTF-8 or not a
    JSON object must be skipped with a warning naming it, not crash the tool."""
    RecordWriter(worker_file(tmp_path, "gw0")).write(Record(benchmark="b", test_id="a", cell_id="a", status="passed"))
    RecordWriter(worker_file(tmp_path, "gw1")).write(Record(benchmark="b", test_id="b", cell_id="b", status="failed"))
    with open(worker_file(tmp_path, "gw1"), "ab") as f:
        f.write(b"\xff\xfe not utf-8\n[1, 2, 3]\n")
    assert summary_tool.main([str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"{worker_file(tmp_path, 'gw1')}:2: skipped a line that is not UTF-8" in err
    assert f"{worker_file(tmp_path, 'gw1')}:3: skipped a line that is JSON but not a record object" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_records"] == 2 and summary["counts"] == {"passed": 1, "failed": 1}
    assert {r["test_id"] for r in read_records(tmp_path / "records.jsonl")} == {"a", "b"}  # merged, adding only


def test_bad_record_lines_do_not_crash_the_session_end(inproc):
    """The same bad lines in the folder a session writes into: the session ends normally, one line per skip."""
    inproc.results.mkdir(parents=True)
    (inproc.results / "records.jsonl").write_bytes(b"\xc3\x28 broken\n\"just a string\"\n")
    inproc.makepyfile("import pytest\n\n@pytest.mark.perplexity\ndef test_one(bench):\n    pass\n")
    result = inproc.runpytest("--results-dir", str(inproc.results))
    out = no_traceback(result)
    assert result.ret == 0
    assert "records.jsonl:1: skipped a line that is not UTF-8" in out
    assert "records.jsonl:2: skipped a line that is JSON but not a record object (str)" in out
    assert json.loads((inproc.results / "summary.json").read_text())["n_records"] == 1


def test_a_crashed_xdist_worker_gives_its_test_an_error_record(tmp_path):
    """A worker that dies mid-test (``os._exit(3)``, as a segfault or the OOM killer would end it) used to leave its
    test without any record."""
    (tmp_path / "test_crash.py").write_text(
        "import os\nimport pytest\n\n\n@pytest.mark.perplexity\n@pytest.mark.parametrize('n', [0, 1])\n"
        "def test_crash(bench, n):\n    if n == 1:\n        os._exit(3)\n")
    cmd = [sys.executable, "-m", "pytest", "test_crash.py", "-q", "-p", "no:cacheprovider", "-n", "1",
           "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    recs = {r["test_id"]: r for r in read_records(tmp_path / "r" / "records.jsonl")}
    assert recs["test_crash.py::test_crash[0]"]["status"] == "passed", proc.stdout
    crashed = recs["test_crash.py::test_crash[1]"]
    assert crashed["status"] == "error" and crashed["cell_id"] == "perplexity/crash|device=cpu|n=1"
    assert "crashed while running this test (exit status 3" in crashed["reason"], crashed["reason"]
    assert not list((tmp_path / "r").glob("running.*.json"))



def test_a_crash_inside_a_weights_group_runs_the_rest_of_the_group_and_not_the_crash_again(tmp_path):
    """Under ``-n`` lmbench schedules by weights group (xdist's loadgroup); xdist re-queued the crashed test with its
    group, so a replacement worker ran it again (or the session hung). The crash is recorded once, the rest runs."""
    (tmp_path / "test_crash.py").write_text(
        "import os\nimport pytest\n\n\n@pytest.mark.perplexity\n@pytest.mark.xdist_group('weights')\n"
        "@pytest.mark.parametrize('n', [0, 1, 2])\ndef test_crash(bench, n):\n    if n == 1:\n        os._exit(3)\n")
    cmd = [sys.executable, "-m", "pytest", "test_crash.py", "-q", "-p", "no:cacheprovider", "-n", "2",
           "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    recs = [(r["test_id"].split("::")[1], r["status"]) for r in read_records(tmp_path / "r" / "records.jsonl")]
    assert sorted(recs) == [("test_crash[0]", "passed"), ("test_crash[1]", "error"), ("test_crash[2]", "passed")], (
        proc.stdout)

# ==================================================================== kill and restart in the same folder


def _env() -> dict[str, str]:
    env = bench_env()
    env["PYTHONPATH"] = str(REPO)  # the worktree's harness, in workers too
    return env


SWEEP = ("--seeds", "0-5")


def _cmd(results: Path, cache: Path, *args: str) -> list[str]:
    """The perplexity benchmark of a toy model at the micro budget (``benches/test_perplexity.py`` only: nothing else
    needs importing)."""
    return [sys.executable, "-m", "pytest", "benches/test_perplexity.py", "-q", "-p", "no:cacheprovider",
            "--results-dir", str(results), "--cache-dir", str(cache), "-m", "perplexity", "--models", TOY,
            "--budget", "micro", *args]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The sweep run once, start to end: what every interrupted-and-restarted run must end with."""
    base = tmp_path_factory.mktemp("whole")
    proc = subprocess.run(_cmd(base / "r", base / "c", *SWEEP), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    final = {(r["cell_id"], r["status"]) for r in latest(read_results(base / "r"))}
    assert len(final) == 6 and {s for _, s in final} == {"passed"}
    return final, base / "c", base / "r"


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "n2"])
def test_killed_and_restarted_in_the_same_folder_ends_with_the_uninterrupted_records(uninterrupted, tmp_path,
                                                                                      xdist):
    """SIGKILL part-way (serial: the run; ``-n 2``: the controller first, then its workers), rerun the same
    command into the same folder: the latest record per cell, and the summary, equal an uninterrupted run's.

    The ``-n 2`` case starts from a folder that already holds a serial run's records (the uninterrupted one, copied):
    serial, then ``-n 2`` killed, then ``-n 2`` again, the issue's reused folder. Its end-of-session merge used to
    rewrite records.jsonl from the worker files alone, erasing those serial records."""
    expected, _, whole = uninterrupted
    results, cache = tmp_path / "r", tmp_path / "c"
    earlier: list[str] = []
    if xdist:
        shutil.copytree(whole, results)
        (results / "summary.json").unlink()
        earlier = (results / "records.jsonl").read_text().splitlines()
    cmd = _cmd(results, cache, *SWEEP, *(["-n", "2"] if xdist else []))
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if len(read_results(results)) >= len(earlier) + 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the controller (or the serial run) dies first
        proc.wait(timeout=30)
        time.sleep(0.5)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # then whatever it left running (xdist workers)
        except ProcessLookupError:
            pass
    killed = len(read_results(results)) - len(earlier)
    assert 2 <= killed < 6, "the kill must land part-way"
    if xdist:
        assert not (results / "summary.json").exists()  # nothing merged or summarised the workers' records
    rerun = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    final = latest(read_results(results))
    assert {(r["cell_id"], r["status"]) for r in final} == expected
    assert all(bool(r["worker"]) == xdist for r in final)  # every cell's latest record is from these runs
    summary = json.loads((results / "summary.json").read_text())
    assert {(r["cell_id"], r["status"]) for r in summary["records"]} == expected
    assert summary["n_records"] == len(expected)
    lines = (results / "records.jsonl").read_text().splitlines()
    assert lines[: len(earlier)] == earlier  # merging only added


# ================================================================================== bad input: one line


def _modules(inproc, **sources: str) -> None:
    inproc.makepyfile(**sources)
    inproc.syspathinsert()


@pytest.mark.parametrize(
    "models,message",
    [
        ("boom_mod:spec", "cannot import model 'boom_mod:spec': importing boom_mod raised RuntimeError: boom at import"),
        ("syntax_mod:spec", "importing syntax_mod raised SyntaxError: "),
        (":", "model ':': an import string needs a module and an attribute, pkg.module:attr"),
        ("exit_mod:spec", "importing exit_mod raised SystemExit: 3"),
        ("tests.faulty:NOT_A_MODEL", "model 'tests.faulty:NOT_A_MODEL' is an object of type int (42); expected a ModelSpec or a "
                                     "builder function build(cfg: ModelConfig) -> nn.Module"),
        ("tests.faulty:A_CLASS", "is the class CausalToy (give a function that builds it from a ModelConfig)"),
        ("tests.faulty:wrong_signature", "is a callable with signature (vocab_size: 'int', d_model: 'int') -> "
                                         "'nn.Module', which cannot take one ModelConfig"),
        ("tests.faulty:returns_none", "model tests.faulty:returns_none: its builder returned NoneType, not an "
                                      "nn.Module"),
    ],
)
def test_bad_import_strings_are_one_usage_line(inproc, models, message):
    """Each used to be a traceback or a pytest INTERNALERROR (a module raising or failing to parse, ``:``), or a
    TypeError minutes later (not a model spec)."""
    _modules(inproc, boom_mod="raise RuntimeError('boom at import')", syntax_mod="def broken(:\n    pass\n",
             exit_mod="import sys\nsys.exit(3)\n")
    result = inproc.runpytest("--results-dir", str(inproc.results), "--models", models, "--budget", "micro")
    assert message in usage_line(result)
    assert not inproc.results.exists()


@pytest.mark.parametrize(
    "name,message",
    [
        ("vocab_minus_one", "ids of shape (2, 16) gave logits of shape (2, 16, 255) (train mode); expected (batch, "
                            "length, vocab) = (2, 16, 256)"),
        ("one_row", "gave logits of shape (1, 16, 256)"),
        ("one_short", "gave logits of shape (2, 15, 256)"),
        ("int_logits", "returned logits of dtype int64; expected floating-point logits"),
        ("no_params", "has no trainable parameters"),
    ],
)
def test_models_breaking_the_output_contract_are_refused_before_training(inproc, tmp_path, name, message):
    """(B, T, V-1) logits used to be trained, measured and reported as a result. An import string is checked when
    the options are read (a usage error); any model is checked again on a tiny batch before it is trained (here a
    provisioner with the real vocabulary)."""
    model = f"tests.faulty:{name}"
    result = inproc.runpytest("--results-dir", str(inproc.results), "--models", model, "--budget", "micro")
    line = usage_line(result)
    assert f"model {model}" in line and message in line
    session = Session(parse_options(budget="micro", cache_dir=tmp_path / "c2", results_dir=tmp_path / "r2"))
    cell = Cell(benchmark="perplexity", model=model, dataset="synthetic-markov", tokenizer="byte", seed=0,
                budget="micro", seq_len=64, bits="fp32", device="cpu")
    with pytest.raises(ModelContractError, match=message.replace("(", r"\(").replace(")", r"\)")):
        session.provision(cell)
    assert not (tmp_path / "c2" / "weights").exists() or not list((tmp_path / "c2" / "weights").glob("*.json"))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(tokenizer="bpe-99"), "tokenizer 'bpe-99': V must be between 256"),
        (dict(datasets="synthetic-markov-o9"), "dataset 'synthetic-markov-o9': order must be 0..3"),
        (dict(models="transformer,no_such_module_xyz:spec"), "cannot import model 'no_such_module_xyz:spec': "
                                                             "importing no_such_module_xyz raised "
                                                             "ModuleNotFoundError"),
        (dict(datasets="tests.faulty:NOT_A_MODEL"), "is neither a DatasetSpec, a Corpus nor a load(ctx) callable"),
    ],
)
def test_reasons_the_code_knows_reach_the_user(kwargs, message):
    """The generic "unknown model/dataset/tokenizer" line used to replace them."""
    with pytest.raises(OptionsError) as exc:
        parse_options(budget="micro", **kwargs)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_device_cuda_without_cuda_is_refused_up_front():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is what is under test")
    with pytest.raises(OptionsError, match="--device cuda: torch .* sees no CUDA device here; use --device cpu"):
        parse_options(device="cuda")


@pytest.mark.parametrize(
    "seeds,message",
    [
        ("-1", "seed -1 is out of range; seeds are integers from 0 to 4,294,967,295"),
        (str(MAX_SEED + 1), "seed 4294967296 is out of range"),
        ("5-2", "the range 5-2 is reversed; write 2-5"),
        ("0-99999999999", "seed 99999999999 is out of range"),
        ("0-5000", "5,001 seeds; a run takes at most 1,000"),
        ("1,,x", "expected integers like 0,1,2"),
    ],
)
def test_bad_seeds_are_refused_up_front(seeds, message):
    with pytest.raises(OptionsError, match=message.replace("(", r"\(")):
        parse_options(seeds=seeds)


def test_duplicate_seeds_are_dropped_with_a_warning_and_counted_once(inproc, tmp_path):
    """``--seeds 0,0,1`` used to measure seed 0 twice and count it twice in every statistic over seeds."""
    assert parse_options(seeds="0,0,1,0-1").seeds == [0, 1]
    inproc.makepyfile("import pytest\n\n@pytest.mark.perplexity\ndef test_s(bench, seed):\n    pass\n")
    result = inproc.runpytest("--results-dir", str(inproc.results), "--seeds", "0,0,1")
    out = no_traceback(result)
    result.assert_outcomes(passed=2)
    assert "--seeds '0,0,1': duplicate seed 0 dropped (each seed is measured and counted once)" in out
    # A folder reused by a rerun holds a cell twice: statistics still count each seed once.
    recs = [Record(benchmark="perplexity", test_id=f"t[{s}]", cell_id=f"perplexity|model=m|seed={s}", model="m",
                   seed=s, status="passed", metrics={"ppl": 2.0 + s}, finished_at=f"2025-01-0{i + 1}")
            for i, s in enumerate([0, 1, 0])]
    writer = RecordWriter(tmp_path / "records.jsonl")
    for rec in recs:
        writer.write(rec)
    summary_tool.summarize_folder(tmp_path)
    (group,) = json.loads((tmp_path / "summary.json").read_text())["benchmarks"]["perplexity"]["groups"]
    assert group["seeds"] == [0, 1] and group["stats"]["ppl"]["n"] == 2 and group["stats"]["ppl"]["mean"] == 2.5


@pytest.mark.parametrize("option", ["--models", "--datasets"])
def test_an_empty_models_or_datasets_value_is_an_error_not_the_default(inproc, option):
    result = inproc.runpytest("--results-dir", str(inproc.results), option, ",")
    assert f"{option} ',' is empty: give at least one name, or leave {option} out" in usage_line(result)


def test_options_no_selected_benchmark_uses_are_a_warning(inproc):
    inproc.makepyfile("import pytest\n\n@pytest.mark.kernels\ndef test_k(bench):\n    pass\n")
    result = inproc.runpytest("--results-dir", str(inproc.results), "--group-size", "64", "--models", "transformer")
    out = no_traceback(result)
    assert result.ret == 0
    assert "--group-size 64 is not used by the selected benchmarks (kernels): it changes nothing" in out
    assert "--models transformer is not used by the selected benchmarks (kernels)" in out


def test_gpt2_tokenizer_without_its_files_is_refused_up_front(tmp_path):
    with pytest.raises(OptionsError, match=r"tokenizer gpt2 is not available: gpt2: no tokenizer files under .*"
                                           r"expected encoder.json, vocab.bpe"):
        parse_options(tokenizer="gpt2", data_dir=tmp_path)


def test_word_tokenizer_on_a_dataset_without_words_is_refused(tmp_path):
    with pytest.raises(OptionsError, match="--tokenizer word: dataset synthetic-markov has no words"):
        parse_options(tokenizer="word", data_dir=tmp_path)
    with pytest.raises(OptionsError, match="dataset synthetic-markov-o2 has no words"):
        parse_options(tokenizer="word", datasets="synthetic-markov-o2", data_dir=tmp_path)


def _text_folder(folder: Path, train: bytes = b"", valid: bytes = b"", test: bytes = b"") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    line = b"the quick brown fox jumps over the lazy dog\n"
    for split, data in (("train", train or line * 400), ("valid", valid or line * 20), ("test", test or line * 20)):
        (folder / f"{split}.txt").write_bytes(data)
    return folder


def test_text_dir_with_and_without_a_slash_is_one_dataset(tmp_path):
    folder = _text_folder(tmp_path / "corpus")
    opts = parse_options(datasets=f"text:{folder},text:{folder}/,text:{folder}/./", budget="micro")
    assert opts.datasets == [f"text:{folder}"]
    assert any("name the same dataset more than once" in w for w in opts.warnings)
    assert parse_options(datasets=f"text:{folder}/", budget="micro").datasets == [f"text:{folder}"]


@pytest.mark.parametrize(
    "data,offset,what",
    [
        (b"caf\xe9 au lait\n", 3, "invalid UTF-8"),
        (b"abc\x00def\n", 3, "NUL byte"),
        (b"na\xc3\xafve\nend \xe2\x82", 11, "a truncated multi-byte character at the end"),
    ],
)
def test_text_that_is_not_utf8_is_one_line_naming_file_offset_and_fix(tmp_path, data, offset, what):
    """Used to be a ``DatasetGenerationError`` traceback from deep inside ``datasets`` (NUL bytes passed silently)."""
    folder = _text_folder(tmp_path / "bad", train=b"fine text\n" * 300 + data)
    train = folder / "train.txt"
    at = train.stat().st_size - len(data) + offset
    with pytest.raises(OptionsError) as exc:
        parse_options(datasets=f"text:{folder}", budget="micro", cache_dir=tmp_path / "c")
    msg = str(exc.value)
    assert "\n" not in msg and f"{train}: " in msg and what in msg
    assert f"at byte offset {at}" in msg and "convert it to UTF-8" in msg
    ctx = DataContext(data_dir=None, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match=f"at byte offset {at}"):
        load_corpus(f"text:{folder}", ctx)


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_or_too_short_split_is_one_line_naming_file_and_minimum(inproc, tmp_path, split):
    """An empty train split used to be a ValueError traceback from the training loop; an empty test split a
    ZeroDivisionError after training."""
    folder = _text_folder(tmp_path / "short", **{split: b"tiny\n" if split == "train" else b"\n"})
    inproc.makepyfile(PPL_TEST)
    result = inproc.runpytest("--results-dir", str(inproc.results), "--models", TOY, "--budget", "micro",
                              "--datasets", f"text:{folder}")
    out = no_traceback(result)
    result.assert_outcomes(failed=1)
    need = "66" if split == "train" else "64"
    (rec,) = read_records(inproc.results / "records.jsonl")
    assert rec["reason"].startswith(f"DataError: {folder / (split + '.txt')}: the {split} split has ")
    assert f"needs at least {need}: use a longer file" in rec["reason"]
    assert f"{folder / (split + '.txt')}: the {split} split has" in out


def test_a_corrupt_arrow_cache_is_rebuilt(tmp_path):
    """A killed ``datasets`` build or a full disk leaves a truncated Arrow file; every later run used to fail."""
    folder = _text_folder(tmp_path / "corpus")
    ctx = DataContext(data_dir=None, cache_dir=tmp_path / "c")
    first = load_corpus(f"text:{folder}", ctx)
    arrows = list((tmp_path / "c" / "hf-datasets").rglob("*.arrow"))
    assert arrows
    for path in arrows:
        with open(path, "r+b") as f:
            f.truncate(100)
    with pytest.warns(RuntimeWarning, match="rebuilding the Hugging Face datasets cache"):
        again = load_corpus(f"text:{folder}", ctx)
    assert again.splits == first.splits
    assert load_corpus(f"text:{folder}", ctx).splits == first.splits  # rebuilt for good: no warning, same text


@pytest.mark.parametrize("meta", ["{}", "null", "[1, 2]", '{"steps": 1, "tokens": 2, "surprise": 3}',
                                  '{"steps": "1", "tokens": 2}', '{"steps": 1, "tokens": 2, "losses": null}'])
def test_cache_metadata_of_the_wrong_shape_means_retrain(trained_entry, meta):
    """Metadata that parses but has another shape used to be a TypeError on every later run (or was loaded)."""
    cache, key, module = trained_entry
    _, mpath = cache.paths(key)
    good = mpath.read_text()
    try:
        mpath.write_text(meta)
        assert cache.load(module, key) is None  # None: retrain
    finally:
        mpath.write_text(good)
    assert cache.load(module, key) is not None


@pytest.fixture(scope="module")
def trained_entry(tmp_path_factory):
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("entry")
    session = Session(parse_options(models=TOY, budget="micro", cache_dir=base / "c", results_dir=base / "r"))
    pm = session.provision(session.cells("perplexity")[0], guard_fresh=False)
    return WeightCache(base / "c"), pm.weights_key, pm.module


def test_an_entry_with_wrong_metadata_is_retrained_and_rewritten(trained_entry):
    cache, key, _ = trained_entry
    _, mpath = cache.paths(key)
    good = json.loads(mpath.read_text())
    mpath.write_text("{}")
    session = Session(parse_options(models=TOY, budget="micro", cache_dir=cache.dir.parent,
                                    results_dir=cache.dir.parent / "r"))
    again = session.provision(session.cells("perplexity")[0], guard_fresh=False)
    assert again.source == "trained" and again.train.steps == good["steps"]
    assert json.loads(mpath.read_text())["steps"] == good["steps"]  # rewritten whole


@pytest.mark.parametrize("model,metric", [("nan_in_eval", "nan"), ("overflow_in_eval", "inf")])
def test_nan_or_overflowing_evaluation_is_a_status_with_a_reason_in_strict_json(inproc, model, metric):
    """An overflowing NLL used to be an OverflowError traceback (math.exp), NaN metrics were written as bare NaN."""
    inproc.makepyfile(PPL_TEST)
    result = inproc.runpytest("--results-dir", str(inproc.results), "--models", f"tests.faulty:{model}",
                              "--budget", "micro")
    no_traceback(result)
    result.assert_outcomes(failed=1)
    for line in (inproc.results / "records.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=_refuse)  # strict JSON: no bare NaN, Infinity or -Infinity
    (rec,) = read_records(inproc.results / "records.jsonl")
    assert rec["status"] == "nonfinite" and "not finite (NaN or an overflow)" in rec["reason"], rec["reason"]
    assert rec["metrics"]["ppl"] is None  # null plus the status, never a number a table could sort
    assert len(rec["train"]["losses"]) == rec["train"]["steps"] > 0  # the training log is kept
    json.loads((inproc.results / "summary.json").read_text(), parse_constant=_refuse)


def _refuse(name: str):
    raise AssertionError(f"bare {name} in strict JSON")


def test_causality_guard_does_not_call_a_noisy_model_leaky():
    """A model whose output carries random noise (its own generator: no seed reset repeats it) changes between two
    runs on identical input as much as a future-token change would. The guard measures that noise first."""
    from tests.faulty import Noisy

    torch.manual_seed(0)
    model = Noisy(32)
    found = check_causality(model, 32, seq_len=64, batch=4)
    assert found.noise > 0.5 and not found.leak, found.message("noisy")
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, 32, size=(4, 64)))
    assert not check_causality(model, 32, seq_len=64, batch=4, ids=ids).leak


# ==================================================================================================== security


@pytest.mark.parametrize("fault", ["world-writable", "owned by another user"])
def test_untrusted_cache_folder_is_refused(inproc, tmp_path, fault):
    """The weight cache holds weights lmbench loads and compiled kernels it imports: a folder others can write is
    refused (as root, ``chown`` to another uid is possible and makes the folder foreign)."""
    cache = tmp_path / "shared-cache"
    (cache / "weights").mkdir(parents=True)
    if fault == "world-writable":
        os.chmod(cache / "weights", 0o777)
    else:
        os.chown(cache, 54321, 54321)
    result = inproc.runpytest("--results-dir", str(inproc.results), "--cache-dir", str(cache))
    line = usage_line(result)
    if fault == "world-writable":
        assert f"{cache / 'weights'} is world-writable (mode 0777): anyone on this machine could plant weights" in line
    else:
        assert f"{cache} is owned by uid 54321, not by you" in line
