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
from harness.options import BITS_CHOICES, Options, OptionsError, parse_options
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
    "gpu(optional=False)": "needs CUDA; selected by --gpu, skipped with a reason when CUDA is absent; "
                           "gpu(optional=True): runs on CPU too, and --gpu selects it (then it needs CUDA)",
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
    g.addoption("--cell-timeout", default=None, help="seconds a cell may run; past it, it stops at the next training step or evaluation window and is recorded as timeout (default: none)")
    g.addoption("--grad-checkpoint", action="store_true", default=False, help="activation checkpointing in every training run (recorded in the recipe)")
    g.addoption("--autocast", default=None, help="bf16: bf16 autocast of forward and loss in every training run, CUDA only (recorded in the recipe)")
    g.addoption("--memory-tasks", default=None, help="synthetic memory tasks (default: mqar,selective-copy,induction-heads; e.g. mqar-v128-p16)")


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
            act_bits=opt("--act-bits"), quant_include=opt("--quant-include"), cell_timeout=opt("--cell-timeout"),
            grad_checkpoint=opt("--grad-checkpoint"), autocast=opt("--autocast"), memory_tasks=opt("--memory-tasks"),
        )
    except OptionsError as exc:
        raise pytest.UsageError(str(exc)) from None


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
    os.environ["LMBENCH_CACHE_DIR"] = str(options.cache_dir)  # the kernel build cache follows --cache-dir too
    from harness.session import Session

    config.stash[SESSION_KEY] = Session(options)
    if options.worker is not None:
        import torch

        from harness.launch.devices import split_threads

        torch.set_num_threads(split_threads(int(config.workerinput.get("workercount", 1))))
    _sigterm_as_interrupt()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistController(options.run_id), "lmbench-xdist")


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
    """Hands the controller's run id to every worker so they write into one results folder."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:  # xdist hook
        node.workerinput["lmbench_run_id"] = self.run_id


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
        varying += sorted(k for k in fixed if k not in varying)
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
        gpu = item.get_closest_marker("gpu")
        needs_cuda = gpu is not None and (not gpu.kwargs.get("optional", False) or opts.gpu)
        if needs_cuda and (not torch.cuda.is_available() or opts.device == "cpu"):
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
    if session.items or not (config.option.markexpr or config.getoption("--gpu")):
        return
    selection = " ".join(p for p in (f"-m {config.option.markexpr!r}" if config.option.markexpr else "",
                                     "--gpu" if config.getoption("--gpu") else "") if p)
    config.stash[EMPTY_KEY] = True
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"lmbench: no benchmark matches this selection ({selection}); nothing to run. "
                      f"Benchmark markers: {', '.join(BENCHMARK_MARKERS)}", yellow=True)


# ---------------------------------------------------------------------------------------------- fixtures


class Bench:
    """One benchmark test's handle: provisions models for its cell and finalises its record.

    ``bench.provision()`` returns a private trained copy of the cell's model (and remembers where it came from, so
    even a test that fails later records the training log); ``bench.finalize(result)`` fills the record and turns
    the verdict (targets, leaks, divergence) into the pytest outcome.
    """

    def __init__(self, session, item: pytest.Item, cell: Cell) -> None:
        import time

        self.session = session
        self.cell = cell
        self.record = session.new_record(cell, item.nodeid)
        self.provenance = None
        timeout = session.options.cell_timeout
        # --cell-timeout: training and long evaluations stop between steps/windows once this has passed.
        self.deadline = time.monotonic() + timeout if timeout else None

    def provision(self, cell: Cell | None = None, **kwargs: Any):
        """``Session.provision`` for the test's cell (keywords: ``train_cfg``, ``stopped_ok``, ``guard_fresh``),
        under the cell's deadline; a run stopped for memory or time still leaves its partial training log in the
        record. A cell that cannot run here (``SkipCell``) is skipped with its reason."""
        from harness.provision import SkipCell, TrainingStopped

        kwargs.setdefault("deadline", self.deadline)
        try:
            pm = self.session.provision(cell or self.cell, **kwargs)
        except SkipCell as exc:
            pytest.skip(str(exc))
        except TrainingStopped as exc:
            self.record.train = exc.result.summary() | {"source": "trained"}
            raise
        return self._provided(pm)

    def provision_task(self, task, train_cfg, **kwargs: Any):
        """``Provisioner.provision_task`` for the test's cell: a model trained from scratch on a synthetic task."""
        from harness.provision import SkipCell

        kwargs.setdefault("deadline", self.deadline)
        try:
            pm = self.session.provisioner.provision_task(self.cell, task, train_cfg, **kwargs)
        except SkipCell as exc:
            pytest.skip(str(exc))
        return self._provided(pm)

    def _provided(self, pm):
        self.provenance = pm.provenance()
        self.record.params, self.record.config_hash = self.provenance.params, self.provenance.weights_key
        self.record.train = self.provenance.train
        return pm

    def skip_if(self, reason: str | None) -> None:
        """Skip the test with ``reason`` when there is one (a reason found only at run time)."""
        if reason:
            pytest.skip(reason)

    def finalize(self, result, provisioned=None) -> None:
        """Fill the record and turn the verdict into the outcome; ``provisioned``: the model the result describes
        when the test provisioned several (e.g. the best of a learning-rate sweep)."""
        if provisioned is not None:
            self._provided(provisioned)
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
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
    _plots(session, rec, report, item.config)
    session.writer().write(rec)
    item.stash[WRITTEN_KEY] = True
    item.stash[RECORD_KEY] = rec


def _plots(session, rec: Record, report: pytest.TestReport, config: pytest.Config) -> None:
    """Plots of the record's benchmark (``harness.reporting.plots``), saved beside the records, named in its
    artefacts and attached to the pytest-html entry (Allure gets them with the record, in the bench fixture)."""
    from harness.reporting import plots

    paths = plots.for_record(session.options.results_dir, rec.to_dict(), session.run_records())
    if not paths:
        return
    rec.artefacts.update({name: str(path) for name, path in paths.items()})
    if not config.getoption("htmlpath", None):
        return
    try:
        import base64

        from pytest_html import extras
    except ImportError:
        return
    report.extras = list(getattr(report, "extras", [])) + [
        extras.png(base64.b64encode(path.read_bytes()).decode(), name=name) for name, path in paths.items()]


def _status(report: pytest.TestReport, call: pytest.CallInfo, rec: Record) -> tuple[str, str | None]:
    hint = rec.status if rec.status not in ("unknown", None) else None
    exc = call.excinfo.value if call.excinfo is not None else None
    if hint is None and getattr(exc, "status", None) in ("oom", "timeout"):  # TrainingStopped outside a measurement
        hint = exc.status
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
    for name, path in rec.artefacts.items():
        if str(path).endswith(".png") and os.path.exists(path):
            allure.attach.file(path, name=name, attachment_type=allure.attachment_type.PNG)


# ------------------------------------------------------------------------------------------- session end


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    lm = config.stash.get(SESSION_KEY, None)
    if lm is None or lm.options.worker is not None:
        return  # workers leave merging and summaries to the controller
    if config.stash.get(EMPTY_KEY, False) and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK  # a valid selection that matches nothing is not an error
    results_dir = lm.options.results_dir
    if not results_dir.exists():
        return
    from harness.reporting.summary import write_summary
    from harness.results.records import RECORDS_FILE, merge_worker_files, read_records

    if any(results_dir.glob("records.*.jsonl")):
        records = merge_worker_files(results_dir)
    else:
        records = read_records(results_dir / RECORDS_FILE)
    write_summary(results_dir, records, lm.options.run_id, lm.options.public())


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lm = config.stash.get(SESSION_KEY, None)
    if lm is None or lm.options.worker is not None or not (lm.options.results_dir / "summary.md").exists():
        return
    terminalreporter.write_sep("-", "lmbench")
    terminalreporter.write_line(f"records: {lm.options.results_dir / 'records.jsonl'}")
    terminalreporter.write_line(f"summary: {lm.options.results_dir / 'summary.md'}")
