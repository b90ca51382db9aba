"""The lmbench pytest plugin (entry point ``pytest11: lmbench``): a thin layer over ``harness.session``.

options → ``Session`` (validated before anything runs) → tests parametrized with cells → ``bench.provision`` →
a measurement's ``Result`` → ``bench.finalize`` (record + verdict) → the record written (fsynced) the moment the
test's outcome is known → merged and summarised at session end. Everything else lives in the library.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable

import pytest

from harness.cells import DEFAULT_AXES, Cell
from harness.options import BITS_CHOICES, LmbenchWarning, Options, OptionsError, parse_options
from harness.results.records import Record

BENCHMARK_MARKERS = {
    "perplexity": "held-out perplexity after training with the shared loop",
    "longcontext": "stability and quality across sequence lengths (to 1M tokens)",
    "quantization": "robustness of trained weights to fp16/bf16/int8/int4/int3/int2",
    "throughput": "tokens per second, training and inference",
    "memory": "peak memory",
    "efficiency": "FLOPs and perplexity-vs-FLOPs",
    "downstream": "zero-shot and fine-tuned downstream tasks",
    "synthetic": "synthetic memory tasks (MQAR, selective copying, induction heads)",
    "kernels": "custom kernels against their reference implementations",
}
OTHER_MARKERS = {
    "gpu": "needs CUDA; selected by --gpu, skipped with a reason when CUDA is absent",
    "slow": "takes minutes even at the smoke budget",
    "axes(*names, **fixed)": "the cell axes a benchmark varies over (default: model, dataset, seed, seq_len); "
                             "name=[values] pins an axis, default_name=[values] is its default when the user gives "
                             "none, options=(...) names options that join the cell's identity when set",
}
# Raw axis arguments a test may request directly instead of a whole cell.
RAW_AXES = {"model_name": "model", "dataset_name": "dataset", "seed": "seed", "bits": "bits", "seq_len": "seq_len"}
_MARKEXPR_WORDS = {"and", "or", "not"}

SESSION_KEY = pytest.StashKey["Any"]()
RECORD_KEY = pytest.StashKey[Record]()
WRITTEN_KEY = pytest.StashKey[bool]()
EMPTY_KEY = pytest.StashKey[bool]()


# ----------------------------------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("lmbench", "lmbench benchmark selection and output")
    g.addoption("--models", default=None, help="comma list of model names or pkg.module:attr (default: all causal built-ins; 'all' adds leaky ones)")
    g.addoption("--datasets", default=None, help="comma list of datasets, text:PATH, or 'all' (default: synthetic-markov)")
    g.addoption("--tokenizer", default="byte", help="byte (default), word, bpe-<V>, gpt2")
    g.addoption("--seeds", default="0", help="comma list of integer seeds or a range a-b (default: 0)")
    g.addoption("--bits", default=None, help=f"comma list of weight precisions ({', '.join(BITS_CHOICES)}); default fp32, and every width for -m quantization")
    g.addoption("--seq-lens", default=None, help="comma list of sequence lengths (default: the budget's training length)")
    g.addoption("--budget", default="smoke", help="micro|smoke|small|full (default smoke); see harness/config.py")
    g.addoption("--device", default="auto", help="cpu|cuda|auto (default auto: cuda when available)")
    g.addoption("--gpu", action="store_true", default=False, help="require CUDA and select only the tests marked gpu")
    g.addoption("--data-dir", default=os.environ.get("LMBENCH_DATA_DIR"), help="folder of local datasets (env LMBENCH_DATA_DIR; default ../shared/data beside the checkout if present)")
    g.addoption("--results-dir", default=None, help="where records go (default reports/results/<run-id>)")
    g.addoption("--cache-dir", default=os.environ.get("LMBENCH_CACHE_DIR"), help="trained weights, tokenizers, encoded data, compiled kernels (env LMBENCH_CACHE_DIR, default .lmbench-cache)")
    g.addoption("--targets-dir", default=None, help="folder of target files (default fixtures/targets of this checkout)")
    g.addoption("--hub", action="store_true", default=False, help="allow downloads from the Hugging Face Hub (off: lmbench never touches the network)")
    g.addoption("--group-size", default=None, help="quantization: group length for int4/int3/int2 (default 128 for int4, 32 for <= 3 bits)")
    g.addoption("--act-bits", default=None, help="quantization: 8 adds dynamic int8 activation quantization (default: weights only)")
    g.addoption("--quant-include", default=None, help="quantization: also quantize 'embeddings' and/or 'head' (comma list; default: Linear layers only)")


def _options(config: pytest.Config) -> Options:
    opt = config.getoption
    workerinput = getattr(config, "workerinput", {})
    try:
        return parse_options(
            models=opt("--models"), datasets=opt("--datasets"), tokenizer=opt("--tokenizer"), seeds=opt("--seeds"),
            bits=opt("--bits"), seq_lens=opt("--seq-lens"), budget=opt("--budget"), device=opt("--device"),
            gpu=opt("--gpu"), data_dir=opt("--data-dir"), results_dir=opt("--results-dir"),
            cache_dir=opt("--cache-dir"), targets_dir=opt("--targets-dir"), hub=opt("--hub"),
            run_id=workerinput.get("lmbench_run_id"), worker=workerinput.get("workerid"),
            results_root=config.rootpath / "reports" / "results", group_size=opt("--group-size"),
            act_bits=opt("--act-bits"), quant_include=opt("--quant-include"),
        )
    except OptionsError as exc:
        raise pytest.UsageError(str(exc)) from None


def _check_results_dir(options: Options) -> None:
    """Refuse a results folder records cannot be written to before anything trains (a measurement that cannot be
    recorded is lost): read-only, not creatable, a file, or on a full disk."""
    from harness.results.records import writable_reason

    reason = writable_reason(options.results_dir)
    if reason:
        raise pytest.UsageError(f"--results-dir: {reason}; choose a writable folder with --results-dir")


@pytest.hookimpl(trylast=True)  # after pytest's own plugins registered their markers (for the -m check)
def pytest_configure(config: pytest.Config) -> None:
    for name, doc in {**BENCHMARK_MARKERS, **OTHER_MARKERS}.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    _check_markexpr(config)
    if not config.getoption("--hub"):
        # Offline is the default contract: the Hugging Face libraries read these at import time.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    options = _options(config)
    if options.worker is None:  # the controller checks once; workers write into the folder it checked
        _check_results_dir(options)
        for message in options.warnings:
            config.issue_config_time_warning(LmbenchWarning(message), stacklevel=2)
    os.environ["LMBENCH_CACHE_DIR"] = str(options.cache_dir)  # the kernel build cache follows --cache-dir too
    from harness.session import Session

    config.stash[SESSION_KEY] = Session(options)
    if options.worker is not None:
        import torch

        from harness.launch.devices import split_threads

        torch.set_num_threads(split_threads(int(config.workerinput.get("workercount", 1))))
    _sigterm_as_interrupt()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistController(options.run_id, config), "lmbench-xdist")


def _check_markexpr(config: pytest.Config) -> None:
    """``-m longcontxt`` (a typo) selects nothing and would pass silently: refuse words that are no marker."""
    expr = config.option.markexpr
    if not expr:
        return
    known = {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}
    words = set(re.findall(r"[A-Za-z_][\w-]*", re.sub(r"\([^)]*\)", " ", expr))) - _MARKEXPR_WORDS
    unknown = sorted(words - known)
    if unknown:
        raise pytest.UsageError(
            f"-m {expr!r}: {', '.join(repr(w) for w in unknown)} is no marker; benchmark markers: "
            f"{', '.join(BENCHMARK_MARKERS)}; others: gpu, slow (pytest --markers lists all)")


def _sigterm_as_interrupt() -> None:
    """A job killed with SIGTERM (CI time-outs, ``kill``) ends like Ctrl-C: summaries of what was measured are
    still written (records are on disk either way)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):

        def _raise(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _raise)


class _XdistController:
    """Hands the controller's run id to every worker so they write into one results folder, and gives a test whose
    worker crashed (a segfault, the OOM killer, ``os._exit``) a record: status ``error`` with the crash reason."""

    def __init__(self, run_id: str, config: pytest.Config) -> None:
        self.run_id = run_id
        self.config = config
        self.down: dict[str, str] = {}

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:  # xdist hook
        node.workerinput["lmbench_run_id"] = self.run_id

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:  # xdist hook, before pytest_handlecrashitem
        if error is not None:
            self.down[node.gateway.id] = " ".join(str(error).split())[:200]

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report, sched) -> None:  # xdist hook
        lm = self.config.stash.get(SESSION_KEY, None)
        if lm is None:
            return
        worker = getattr(getattr(report, "node", None), "gateway", None)
        wid = getattr(worker, "id", "?")
        rec = _running_record(lm.options.results_dir, wid, crashitem)
        if rec is None:
            return  # not a benchmark test: nothing to record
        from harness.session import now

        rec.update(status="error", finished_at=now(), duration_s=None,
                   reason=f"worker {wid} crashed while running this test ({_crash_cause(worker, self.down.get(wid))})")
        try:
            lm.writer().write(rec)
            _running_file(lm.options.results_dir, wid).unlink(missing_ok=True)
        except OSError as exc:
            _note(self.config, f"could not write the crash record of {crashitem}: {exc.strerror or exc}")


def _crash_cause(gateway, error: str | None) -> str:
    """Why a worker died, as far as the controller can tell: its exit signal or status, and xdist's words."""
    import signal

    parts = []
    popen = getattr(getattr(gateway, "_io", None), "popen", None)
    if popen is not None:
        try:
            code = popen.wait(timeout=2)
        except Exception:  # still running or not waitable: no exit status to report
            code = None
        if code is not None and code < 0:
            try:
                parts.append(f"killed by {signal.Signals(-code).name}")
            except ValueError:
                parts.append(f"killed by signal {-code}")
        elif code:
            parts.append(f"exit status {code}")
    if error:
        parts.append(error)
    return "; ".join(parts) or "the worker process ended"


def _running_file(results_dir, worker: str):
    return results_dir / f"running.{worker}.json"


def _running_record(results_dir, worker: str, nodeid: str) -> dict | None:
    """The record skeleton a worker left when it started ``nodeid`` (None if it was not a benchmark test)."""
    import json

    try:
        data = json.loads(_running_file(results_dir, worker).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("test_id") == nodeid else None


def _session(config: pytest.Config):
    return config.stash[SESSION_KEY]


# ------------------------------------------------------------------------------------------ parametrization


def _benchmark_name(node: Any) -> str:
    marker = next((m.name for m in node.iter_markers() if m.name in BENCHMARK_MARKERS), None)
    return marker or node.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")


def _measure_name(node: Any, benchmark: str) -> str | None:
    """The test function's name when it is not the benchmark's only measurement (``test_<benchmark>``)."""
    name = getattr(node, "originalname", None) or node.name.split("[", 1)[0]
    name = name.removeprefix("test_")
    return None if name == benchmark else name


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session = _session(metafunc.config)
    definition = metafunc.definition
    if "cell" in metafunc.fixturenames:
        marker = definition.get_closest_marker("axes")
        axes = tuple(marker.args) if marker and marker.args else DEFAULT_AXES
        kwargs = dict(marker.kwargs) if marker else {}
        options = tuple(kwargs.pop("options", ()))
        defaults = {k.removeprefix("default_"): v for k, v in kwargs.items() if k.startswith("default_")}
        fixed = {k: v for k, v in kwargs.items() if not k.startswith("default_")}
        bench_name = _benchmark_name(definition)
        try:
            cells = [c.replace(measure=_measure_name(definition, bench_name))
                     for c in session.cells(bench_name, axes, fixed, defaults, options)]
        except ValueError as exc:
            raise pytest.UsageError(f"{definition.nodeid}: {exc}") from None
        varying = [a for a in ("model", "dataset", "seed", "seq_len", "bits") if a in set(axes) | set(fixed)]
        metafunc.parametrize("cell", cells, ids=[c.label(varying) for c in cells])
    values = session.options.axis_values()
    pinned = {n for m in definition.iter_markers("parametrize") if m.args for n in _argnames(m.args[0])}
    for argname, axis in RAW_AXES.items():
        if argname in metafunc.fixturenames and argname not in pinned:
            ids = [f"s{v}" if axis == "seed" else str(v) for v in values[axis]]
            metafunc.parametrize(argname, values[axis], ids=ids)


def _argnames(spec: str | list | tuple) -> list[str]:
    """The argument names of a ``parametrize`` marker ("a,b" or ["a", "b"])."""
    return [a.strip() for a in spec.split(",")] if isinstance(spec, str) else list(spec)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    session = _session(config)
    opts = session.options
    if opts.gpu:
        keep = [it for it in items if it.get_closest_marker("gpu")]
        dropped = [it for it in items if not it.get_closest_marker("gpu")]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
    no_cuda = pytest.mark.skip(
        reason=f"needs CUDA, which torch {torch.__version__} does not see here: run on a machine with an NVIDIA GPU"
        + (" or drop --gpu" if opts.gpu else "")
    )
    for item in items:
        if item.get_closest_marker("gpu") and (not torch.cuda.is_available() or opts.device == "cpu"):
            item.add_marker(no_cuda)
        params = getattr(item, "callspec", None).params if hasattr(item, "callspec") else {}
        cell = params.get("cell")
        if cell is not None:
            reason = session.skip_reason(cell)
        elif params.get("dataset_name") in opts.unavailable:
            ds = params["dataset_name"]
            reason = f"dataset {ds} not available: {opts.unavailable[ds]}"
        else:
            reason = None
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    _warn_unused_options(config, session.items)
    if session.items or not (config.option.markexpr or config.getoption("--gpu")):
        return
    selection = " ".join(p for p in (f"-m {config.option.markexpr!r}" if config.option.markexpr else "",
                                     "--gpu" if config.getoption("--gpu") else "") if p)
    config.stash[EMPTY_KEY] = True
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"lmbench: no benchmark matches this selection ({selection}); nothing to run. "
                      f"Benchmark markers: {', '.join(BENCHMARK_MARKERS)}", yellow=True)


# Options that only some benchmarks use: the cell axis (or ``axes(options=...)`` name) each one feeds.
_OPTION_USE = {"--models": "model", "--datasets": "dataset", "--tokenizer": "dataset", "--seeds": "seed",
               "--seq-lens": "seq_len", "--bits": "bits", "--group-size": "group_size", "--act-bits": "act_bits",
               "--quant-include": "quant_include"}
_OPTION_DEFAULTS = {"--tokenizer": "byte", "--seeds": "0"}


def _item_uses(item: pytest.Item) -> set[str]:
    """The axes and cell options a collected test takes from the command line."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    used = {RAW_AXES[k] for k in params if k in RAW_AXES}
    if "cell" in params:
        marker = item.get_closest_marker("axes")
        axes = set(marker.args) if marker and marker.args else set(DEFAULT_AXES)
        kwargs = dict(marker.kwargs) if marker else {}
        fixed = {k for k in kwargs if k != "options" and not k.startswith("default_")}
        used |= (axes - fixed) | set(kwargs.get("options", ()))
    return used


def _warn_unused_options(config: pytest.Config, items: list[pytest.Item]) -> None:
    """An option no selected benchmark reads changes nothing; say so instead of letting the user believe it did."""
    benches = [it for it in items if any(m.name in BENCHMARK_MARKERS for m in it.iter_markers())]
    if not benches:
        return
    used = set().union(*(_item_uses(it) for it in benches))
    names = sorted({_benchmark_name(it) for it in benches})
    for option, axis in _OPTION_USE.items():
        value = config.getoption(option)
        if value is None or value == _OPTION_DEFAULTS.get(option) or axis in used:
            continue
        import warnings

        warnings.warn(LmbenchWarning(f"{option} {value} is not used by the selected benchmarks "
                                     f"({', '.join(names)}): it changes nothing"), stacklevel=2)


# ---------------------------------------------------------------------------------------------- fixtures


class Bench:
    """One benchmark test's handle: provisions models for its cell and finalises its record.

    ``bench.provision()`` returns a private trained copy of the cell's model (and remembers where it came from, so
    even a test that fails later records the training log); ``bench.finalize(result)`` fills the record and turns
    the verdict (targets, leaks, divergence) into the pytest outcome.
    """

    def __init__(self, session, item: pytest.Item, cell: Cell) -> None:
        self.session = session
        self.cell = cell
        self.record = session.new_record(cell, item.nodeid)
        self.provenance = None

    def provision(self, cell: Cell | None = None, **kwargs: Any):
        from harness.provision import SkipCell

        try:
            pm = self.session.provision(cell or self.cell, **kwargs)
        except SkipCell as exc:
            pytest.skip(str(exc))
        self.provenance = pm.provenance()
        self.record.params, self.record.config_hash = self.provenance.params, self.provenance.weights_key
        self.record.train = self.provenance.train
        return pm

    def finalize(self, result) -> None:
        _, verdict = self.session.finalize(self.cell, result, self.provenance, record=self.record)
        if verdict.outcome == "failed":
            pytest.fail(verdict.message, pytrace=False)
        if verdict.outcome == "xfailed":
            pytest.xfail(verdict.message)


@pytest.fixture(scope="session")
def lmbench(request: pytest.FixtureRequest) -> Options:
    """The validated lmbench options of this session."""
    return _session(request.config).options


@pytest.fixture(scope="session")
def lmbench_session(request: pytest.FixtureRequest):
    """The ``harness.session.Session`` of this process (data store, provisioner, finaliser)."""
    return _session(request.config)


@pytest.fixture
def bench(request: pytest.FixtureRequest) -> Bench:
    """The record of this measurement and the way to finalise it (written once the outcome is known)."""
    b = Bench(_session(request.config), request.node, _item_cell(request.node))
    request.node.stash[RECORD_KEY] = b.record
    yield b
    _attach_to_allure(request.node)


@pytest.fixture
def provision(bench: Bench) -> Callable:
    """``provision(cell=None)`` → a private trained copy of the test's cell model (``harness.provision``)."""
    return bench.provision


def _item_cell(item: pytest.Item) -> Cell:
    """The item's cell: its ``cell`` parameter, or one built from its other parameters (e.g. a kernel's mode)."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    if isinstance(params.get("cell"), Cell):
        return params["cell"]
    session = _session(item.config)
    raw = {RAW_AXES[k]: v for k, v in params.items() if k in RAW_AXES}
    others = tuple(sorted((k, v if isinstance(v, (int, float, str, bool)) else str(v))
                          for k, v in params.items() if k not in RAW_AXES))
    has_model = "model" in raw or "dataset" in raw
    bench_name = _benchmark_name(item)
    return Cell(benchmark=bench_name, measure=_measure_name(item, bench_name),
                tokenizer=session.options.tokenizer if "dataset" in raw else None,
                budget=session.options.budget if has_model else None, device=session.options.device_type,
                params=others, **raw)


# ---------------------------------------------------------------------------------------- record writing


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem) -> None:
    """An xdist worker leaves the record skeleton of the benchmark test it starts, so the controller can record
    the test if the worker dies in it (``_XdistController.pytest_handlecrashitem``)."""
    session = item.config.stash.get(SESSION_KEY, None)
    if session is None or session.options.worker is None:
        return
    if not any(m.name in BENCHMARK_MARKERS for m in item.iter_markers()):
        return
    from harness.results.records import atomic_write_text, dumps

    try:
        rec = session.new_record(_item_cell(item), item.nodeid)
        session.options.results_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_running_file(session.options.results_dir, session.options.worker), dumps(rec.to_dict()),
                          fsync=False)
    except OSError:
        pass  # only a crash record is at stake; the test's own record is written as usual


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed and call.excinfo is not None:
        from harness.errors import InputError

        if isinstance(call.excinfo.value, InputError):  # a bad input: its one line, not a traceback
            report.longrepr = str(call.excinfo.value)
    if item.stash.get(WRITTEN_KEY, False):
        return
    rec = item.stash.get(RECORD_KEY, None)
    if rec is None and not any(m.name in BENCHMARK_MARKERS for m in item.iter_markers()):
        return
    if not (report.when == "call" or (report.when == "setup" and not report.passed)):
        return
    session = _session(item.config)
    if rec is None:
        rec = session.new_record(_item_cell(item), item.nodeid)
    from harness.session import now

    rec.status, rec.reason = _status(report, call, rec)
    rec.finished_at = now()
    rec.duration_s = report.duration if report.when == "call" else 0.0
    writer = session.writer()
    try:
        writer.write(rec)
    except OSError as exc:
        # A full or vanished disk: this test fails with one line; every record written before is intact (a torn
        # write is cut back), and the session goes on.
        report.outcome = "failed"
        report.longrepr = (f"lmbench could not write this test's record ({rec.status}) to {writer.path}: "
                           f"{exc.strerror or exc}; every earlier record is intact; free space or use another "
                           f"--results-dir")
    item.stash[WRITTEN_KEY] = True
    item.stash[RECORD_KEY] = rec


def _status(report: pytest.TestReport, call: pytest.CallInfo, rec: Record) -> tuple[str, str | None]:
    hint = rec.status if rec.status not in ("unknown", None) else None
    if hasattr(report, "wasxfail"):
        if report.passed:
            return "xpassed", report.wasxfail or "expected to fail but passed"
        return hint or "xfailed", report.wasxfail or rec.reason
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return "skipped", reason.removeprefix("Skipped: ")
    if report.failed:
        return hint or ("failed" if report.when == "call" else "error"), _message(call, report)
    return hint or "passed", rec.reason


def _message(call: pytest.CallInfo, report: pytest.TestReport) -> str | None:
    """The failure's own one-line message (not a file and line)."""
    exc = call.excinfo.value if call.excinfo is not None else None
    if exc is not None:
        text = getattr(exc, "msg", None) or str(exc)
        if getattr(exc, "argname", None) and "not found" not in str(text):
            text = f"fixture {exc.argname!r} not found"
        lines = [ln for ln in str(text).splitlines() if ln.strip()]
        first = lines[0].strip() if lines else ""
        if isinstance(exc, (AssertionError, pytest.fail.Exception)) or first.startswith(type(exc).__name__):
            return first or type(exc).__name__
        return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message.splitlines()[0] if crash is not None and crash.message else None


def _attach_to_allure(item: pytest.Item) -> None:
    if not item.config.pluginmanager.hasplugin("allure_pytest") or not item.config.getoption("--alluredir", None):
        return
    rec = item.stash.get(RECORD_KEY, None)
    if rec is None:
        return
    import json

    import allure

    allure.attach(json.dumps(rec.to_dict(), indent=2, default=str), name="lmbench record",
                  attachment_type=allure.attachment_type.JSON)


# ------------------------------------------------------------------------------------------- session end


NOTES_KEY = pytest.StashKey[list]()


def _note(config: pytest.Config, line: str) -> None:
    """A line for the lmbench section of the terminal summary (problems at session end are lines, not tracebacks)."""
    config.stash.setdefault(NOTES_KEY, []).append(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    lm = config.stash.get(SESSION_KEY, None)
    if lm is None:
        return
    if lm.options.worker is not None:  # workers leave merging and summaries to the controller
        _running_file(lm.options.results_dir, lm.options.worker).unlink(missing_ok=True)
        return
    if config.stash.get(EMPTY_KEY, False) and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK  # a valid selection that matches nothing is not an error
    results_dir = lm.options.results_dir
    if not results_dir.is_dir():
        return
    import warnings

    from harness.reporting.summary import summarize_folder

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            summarize_folder(results_dir, lm.options.run_id, lm.options.public())
        except OSError as exc:
            _note(config, f"could not write the summary in {results_dir}: {exc.strerror or exc}; every record is "
                          f"kept; once there is space run: python -m harness.reporting.summary {results_dir}")
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
    for w in caught:
        _note(config, f"warning: {w.message}")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lm = config.stash.get(SESSION_KEY, None)
    notes = config.stash.get(NOTES_KEY, [])
    if lm is None or lm.options.worker is not None:
        return
    has_summary = (lm.options.results_dir / "summary.md").exists()
    if not (has_summary or notes):
        return
    terminalreporter.write_sep("-", "lmbench")
    for line in notes:
        terminalreporter.write_line(f"lmbench: {line}", yellow=True)
    if has_summary:
        terminalreporter.write_line(f"records: {lm.options.results_dir / 'records.jsonl'}")
        terminalreporter.write_line(f"summary: {lm.options.results_dir / 'summary.md'}")
