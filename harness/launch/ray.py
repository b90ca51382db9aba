"""``--launcher ray``: every cell a Ray task, with pytest's outcome reporting kept per cell.

Why this shape: pytest stays the driver. The controller (``pytest benches --launcher ray``) collects and
parametrizes as always, then, instead of running items itself, submits one Ray task per item. The task runs
pytest *on that one node id* in a Ray worker (the same plugin, fixtures, markers, xfail, targets) and sends back
pytest's own serialized reports (``pytest_report_to_serializable``, as xdist does) plus the records it wrote; the
controller replays the reports through its hooks, so the terminal, ``-x``, JUnit/HTML reports and the exit code
behave as in a serial run. Ray does the rest: scheduling on free GPUs/CPUs, retries of tasks whose worker or node
died, resource accounting. There is no scheduler, socket or pool here.

Cells sharing trained weights (the same ``train_key``) are chained with Ray's own task dependencies: the first of a
group is submitted as is, the others take its result as an argument, so Ray starts them once the weights are in the
shared cache (``--cache-dir``, guarded by the weight cache's file lock either way) instead of training them twice
or holding a GPU while waiting on the lock.

Records: a task whose node sees the run's results folder (the same machine, or a shared filesystem) writes its
records there itself, in ``records.ray-<node>-<pid>.jsonl`` (fsynced as each cell ends; merged at session end like
xdist's worker files). A task on a node that does not see it writes into a temporary folder and returns its
records, which the controller writes into the run's ``records.jsonl``. Either way they end in one folder.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pytest

from harness.options import Options, OptionsError

TASK_KEY = pytest.StashKey["CellTask"]()
_OUTPUT_TAIL = 4000  # characters of a task's pytest output sent back when it produced no report


# ------------------------------------------------------------------------------------------- the Ray task


@dataclass(frozen=True)
class TaskSpec:
    """What every task needs to run pytest as the controller would, on one node id."""

    rootdir: str  # the controller's rootdir (the checkout); on nodes without it, the task's working directory
    invocation_dir: str  # where the controller was started (relative paths in options are relative to it)
    args: tuple[str, ...]  # pytest arguments without node ids, results folder and launcher options
    run_id: str
    results_dir: str
    threads: int  # torch threads per task: the CPUs it asked Ray for


class CellTask:
    """The plugin a task runs pytest with: names the run and the worker, and keeps the reports to send back."""

    def __init__(self, spec: TaskSpec, worker: str) -> None:
        self.run_id = spec.run_id
        self.worker = worker
        self.threads = spec.threads
        self.reports: list[dict[str, Any]] = []
        self.collect_errors: list[str] = []
        self.config: pytest.Config | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config
        config.stash[TASK_KEY] = self

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        assert self.config is not None
        self.reports.append(self.config.hook.pytest_report_to_serializable(config=self.config, report=report))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            lines = [ln for ln in str(report.longrepr).splitlines() if ln.strip()]
            self.collect_errors.append(f"{report.nodeid}: {lines[-1] if lines else 'collection failed'}")


def run_cell(spec: TaskSpec, nodeid: str, *after: Any) -> dict[str, Any]:
    """The body of one Ray task: pytest on ``nodeid`` in this worker; its reports and records come back.

    ``after`` are results of tasks this one was made to wait for (the cell that trains the shared weights); Ray
    resolves them before the task starts, and they are not used otherwise."""
    import ray

    root = Path(spec.rootdir) if Path(spec.rootdir).is_dir() else Path.cwd()
    results = Path(spec.results_dir)
    shared = _is_run_folder(results, spec.run_id)
    if not shared:
        results = Path(tempfile.mkdtemp(prefix="lmbench-ray-"))
    worker = f"ray-{ray.get_runtime_context().get_node_id()[:8]}-{os.getpid()}"
    from harness.results.records import worker_file

    records_path = worker_file(results, worker)
    offset = records_path.stat().st_size if records_path.exists() else 0
    task = CellTask(spec, worker)
    args = [*spec.args, "--results-dir", str(results), "--rootdir", str(root), f"{root}{os.sep}{nodeid}"]
    out = io.StringIO()
    cwd = os.getcwd()
    code: int = pytest.ExitCode.INTERNAL_ERROR
    try:
        os.chdir(spec.invocation_dir if Path(spec.invocation_dir).is_dir() else root)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = int(pytest.main(args, plugins=[task]))
    except BaseException as exc:  # noqa: B036 - whatever happens, the controller must learn it as this cell's error
        out.write(f"\n{type(exc).__name__}: {exc}")
    finally:
        os.chdir(cwd)
    records = _records_since(records_path, offset)
    if not shared:
        shutil.rmtree(results, ignore_errors=True)
    return {"reports": task.reports, "records": records, "shared": shared, "exit": code, "worker": worker,
            "collect_errors": task.collect_errors, "output": out.getvalue()[-_OUTPUT_TAIL:]}


def _is_run_folder(results: Path, run_id: str) -> bool:
    """Whether this node sees the run's own results folder (its ``run.json`` names the run)."""
    try:
        return json.loads((results / "run.json").read_text()).get("run_id") == run_id
    except (OSError, ValueError, AttributeError):
        return False


def _records_since(path: Path, offset: int) -> list[dict[str, Any]]:
    """The records this task appended to its worker file (a reused worker process appends across tasks)."""
    if not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", errors="replace")
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


# ------------------------------------------------------------------------------------------ the controller


class RayLauncher:
    """The controller's side: connects to Ray, submits one task per item, replays the outcomes in pytest."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.started_here = False
        self.ray = None

    def connect(self, rootdir: Path) -> None:
        """Join the cluster at ``--ray-address`` (or start a local instance) and settle ``--device auto`` against
        the cluster's GPUs. Every failure is an ``OptionsError`` naming the fix."""
        try:
            import ray
        except ImportError:
            raise OptionsError("--launcher ray needs Ray, which is not installed here: "
                               "pip install 'lmbench[ray]' (or pip install ray)") from None
        self.ray = ray
        # Workers import the same harness as this process and the checkout's own modules (tests, benches, models
        # named pkg.module:attr): on other nodes, the same paths (a shared filesystem or image) or an installed
        # lmbench. A user's PYTEST_ADDOPTS (e.g. -n 4) must not turn each task into an xdist session.
        runtime_env = {"env_vars": {"PYTHONPATH": _pythonpath(rootdir), "PYTEST_ADDOPTS": ""}}
        address = self.options.ray_address
        try:
            if ray.is_initialized():
                pass
            elif address:
                ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
            else:
                ray.init(runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)
                self.started_here = not os.environ.get("RAY_ADDRESS")
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError … depending on the failure
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            where = f"--ray-address {address}" if address else "a local Ray instance"
            raise OptionsError(f"--launcher ray: could not start or join {where} ({first}); start a cluster with "
                               "`ray start --head` and pass --ray-address HOST:PORT, or drop --ray-address") from None
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if self.options.device == "cuda" and gpus == 0:
            raise OptionsError("--device cuda: the Ray cluster has no GPU; use --device cpu, or start Ray on GPU "
                               "nodes (ray start --num-gpus N)")
        if self.options.device == "auto":
            self.options.device = "cuda" if gpus else "cpu"

    def describe(self) -> str:
        """One line for pytest's header: where the cells run and what each asks for."""
        assert self.ray is not None
        res = self.ray.cluster_resources()
        where = f"cluster {self.options.ray_address}" if self.options.ray_address else "a local instance"
        ask = "1 GPU" if self.options.device_type == "cuda" else f"{self.options.ray_cpus} CPU"
        return (f"Ray on {where} ({int(res.get('CPU', 0))} CPUs, {int(res.get('GPU', 0))} GPUs): each cell a task "
                f"requesting {ask}")

    def shutdown(self) -> None:
        if self.ray is not None and self.ray.is_initialized():
            self.ray.shutdown()

    def run(self, session: pytest.Session, spec: TaskSpec, items: Sequence[tuple[pytest.Item, str | None]],
            fail_record) -> None:
        """Submit every item (chained after the first of its weights group), then report each outcome as it
        arrives. ``fail_record(item, message)`` writes the record of an item whose task itself failed."""
        ray = self.ray
        assert ray is not None
        cuda = self.options.device_type == "cuda"
        task = ray.remote(num_gpus=1)(run_cell) if cuda else ray.remote(num_cpus=self.options.ray_cpus)(run_cell)
        firsts: dict[str, Any] = {}
        owner: dict[Any, pytest.Item] = {}
        for item, group in items:
            after = (firsts[group],) if group in firsts else ()
            ref = task.remote(spec, item.nodeid, *after)
            if group is not None:
                firsts.setdefault(group, ref)
            owner[ref] = item
        pending = list(owner)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                item = owner[done[0]]
                try:
                    payload = ray.get(done[0])
                except Exception as exc:  # the task itself failed (after Ray's retries), not the test
                    payload = {"reports": [], "records": [], "shared": False, "error": _one_line(exc)}
                self._report(session, item, payload, fail_record)
                if session.shouldfail or session.shouldstop:
                    break
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def _report(self, session: pytest.Session, item: pytest.Item, payload: dict[str, Any], fail_record) -> None:
        config = session.config
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        reports = [config.hook.pytest_report_from_serializable(config=config, data=d) for d in payload["reports"]]
        if not any(r.when == "call" or r.failed or r.skipped for r in reports):
            message = payload.get("error") or _no_report_reason(item.nodeid, payload)
            reports.append(pytest.TestReport(
                nodeid=item.nodeid, location=item.location, keywords={k: 1 for k in item.keywords},
                outcome="failed", longrepr=f"Ray task for {item.nodeid}: {message}", when="setup", sections=[],
                duration=0.0, user_properties=[]))
            fail_record(item, f"Ray task failed: {message}")
        for report in reports:
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        if not payload.get("shared", True) and payload.get("records"):
            from harness.results.records import RECORDS_FILE, RecordWriter

            writer = RecordWriter(self.options.results_dir / RECORDS_FILE)
            for rec in payload["records"]:
                writer.write(rec)


def _pythonpath(rootdir: Path) -> str:
    """The checkout, the folder this harness was imported from (unless it is installed in site-packages), and the
    caller's ``PYTHONPATH``."""
    import harness

    parts = [str(rootdir)]
    source = Path(harness.__file__).resolve().parent.parent
    if not any(p in ("site-packages", "dist-packages") for p in source.parts):
        parts.insert(0, str(source))
    parts += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(parts))


def _no_report_reason(nodeid: str, payload: dict[str, Any]) -> str:
    """Why a task ran pytest but got no outcome for its item (a usage error on that node, a collection error)."""
    if payload.get("collect_errors"):
        return payload["collect_errors"][0]
    lines = [ln.strip() for ln in str(payload.get("output", "")).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("ERROR", "E ")) or "Error" in ln]
    detail = (errors or lines or ["no output"])[-1]
    return (f"pytest on the worker exited {payload.get('exit')} without running it ({detail}); the worker must see "
            "the same checkout, data and options as this machine")


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def task_args(raw: dict[str, Any], flags: dict[str, str], invocation_args: Sequence[str]) -> tuple[str, ...]:
    """The pytest arguments of every task: the run's lmbench options (``raw``: kwarg -> value, ``flags``: kwarg
    -> option) and the controller's ``-p``/``-o``/``-W``/``--import-mode`` arguments, quietly, without xdist."""
    out = ["-q", "-p", "no:xdist", "-p", "no:cacheprovider"]
    for name, value in raw.items():
        if value is None or value is False or name not in flags:
            continue
        out += [flags[name]] if value is True else [f"{flags[name]}={value}"]
    args = list(invocation_args)
    for i, a in enumerate(args):
        for short, long in (("-p", None), ("-o", "--override-ini"), ("-W", "--pythonwarnings"),
                            (None, "--import-mode")):
            if a in (short, long) and i + 1 < len(args):
                out += [a, args[i + 1]]
            elif (short and a.startswith(short) and len(a) > 2 and not a.startswith("--")) or \
                    (long and a.startswith(long + "=")):
                out.append(a)
    return tuple(out)
