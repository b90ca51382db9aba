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
from harness.launch.ray import TASK_KEY
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
    "gpu(optional=False)": "needs CUDA; selected by --gpu, skipped with a reason when CUDA is absent; "
                           "gpu(optional=True): runs on CPU too, and --gpu selects it (then it needs CUDA)",
    "slow": "takes minutes even at the smoke budget",
    "axes(*names, **fixed)": "the cell axes a benchmark varies over (default: model, dataset, seed, seq_len); "
                             "name=[values] pins an axis, default_name=[values] is its default when the user gives "
                             "none, options=(...) names options that join the cell's identity when set",
}
# Raw axis arguments a test may request directly instead of a whole cell.
RAW_AXES = {"model_name": "model", "dataset_name": "dataset", "seed": "seed", "bits": "bits", "seq_len": "seq_len"}
# Downstream task arguments, parametrized from --tasks; both join the cell's identity as ``task=<name>``.
TASK_ARGS = {"downstream_task": "task", "finetune_task": "task"}
_MARKEXPR_WORDS = {"and", "or", "not"}

SESSION_KEY = pytest.StashKey["Any"]()
RECORD_KEY = pytest.StashKey[Record]()
WRITTEN_KEY = pytest.StashKey[bool]()
EMPTY_KEY = pytest.StashKey[bool]()
RAW_KEY = pytest.StashKey[dict]()  # the lmbench options as typed (after a resume restored the run's)
LAUNCHER_KEY = pytest.StashKey["Any"]()  # the Ray launcher of a --launcher ray controller
RESUME_KEY = pytest.StashKey[dict]()  # a resumed run's plan and what it has measured already
HEADLINE_KEY = pytest.StashKey[dict]()
REPORT_KEY = pytest.StashKey["Any"]()
BASELINE_WRITTEN_KEY = pytest.StashKey["Any"]()


# ----------------------------------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("lmbench", "lmbench benchmark selection and output")
    for _name, flag, kwargs in _option_table():
        g.addoption(flag, **kwargs)


def _option_table() -> list[tuple[str, str, dict[str, Any]]]:
    """(``parse_options`` keyword, option, ``addoption`` arguments) of every lmbench option."""
    flag = {"action": "store_true", "default": False}
    return [
        ("models", "--models", {"default": None, "help": "comma list of model names or pkg.module:attr (default: all causal built-ins; 'all' adds leaky ones)"}),
        ("datasets", "--datasets", {"default": None, "help": "comma list of datasets, text:PATH, or 'all' (default: synthetic-markov)"}),
        ("tokenizer", "--tokenizer", {"default": "byte", "help": "byte (default), word, bpe-<V>, gpt2"}),
        ("seeds", "--seeds", {"default": "0", "help": "comma list of integer seeds or a range a-b (default: 0)"}),
        ("bits", "--bits", {"default": None, "help": f"comma list of weight precisions ({', '.join(BITS_CHOICES)}); default fp32, and every width for -m quantization"}),
        ("seq_lens", "--seq-lens", {"default": None, "help": "comma list of sequence lengths (default: the budget's training length)"}),
        ("budget", "--budget", {"default": "smoke", "help": "micro|smoke|small|full (default smoke); see harness/config.py"}),
        ("device", "--device", {"default": "auto", "help": "cpu|cuda|auto (default auto: cuda when available)"}),
        ("gpu", "--gpu", {**flag, "help": "require CUDA and select only the tests marked gpu"}),
        ("data_dir", "--data-dir", {"default": os.environ.get("LMBENCH_DATA_DIR"), "help": "folder of local datasets (env LMBENCH_DATA_DIR; default ../shared/data beside the checkout if present)"}),
        ("results_dir", "--results-dir", {"default": None, "help": "where records go (default reports/results/<run-id>)"}),
        ("cache_dir", "--cache-dir", {"default": os.environ.get("LMBENCH_CACHE_DIR"), "help": "trained weights, tokenizers, encoded data, compiled kernels (env LMBENCH_CACHE_DIR, default .lmbench-cache); on a cluster, a folder every node shares"}),
        ("targets_dir", "--targets-dir", {"default": None, "help": "folder of target files (default fixtures/targets of this checkout)"}),
        ("hub", "--hub", {**flag, "help": "allow downloads from the Hugging Face Hub (off: lmbench never touches the network)"}),
        ("baseline", "--baseline", {"default": None, "metavar": "PATH", "help": "gate every record against this baseline JSON (matched by cell id; rules in the [gate] tables of the targets files); see docs/reports.md"}),
        ("update_baseline", "--update-baseline", {**flag, "help": "write this run's passed cells into --baseline at the end (atomically; other cells are kept) instead of failing on regressions"}),
        ("group_size", "--group-size", {"default": None, "help": "quantization: group length for int4/int3/int2 (default 128 for int4, 32 for <= 3 bits)"}),
        ("act_bits", "--act-bits", {"default": None, "help": "quantization: 8 adds dynamic int8 activation quantization (default: weights only)"}),
        ("quant_include", "--quant-include", {"default": None, "help": "quantization: also quantize 'embeddings' and/or 'head' (comma list; default: Linear layers only)"}),
        ("tasks", "--tasks", {"default": None, "help": "downstream: comma list of tasks or groups (default: every shipped task; a group such as mmlu is one cell)"}),
        ("limit", "--limit", {"default": None, "help": "downstream: examples per task, split over the subjects of a group such as mmlu (default: the budget's, see harness/config.py)"}),
        ("cell_timeout", "--cell-timeout", {"default": None, "help": "seconds a cell may run; past it, it stops at the next training step or evaluation window and is recorded as timeout (default: none)"}),
        ("grad_checkpoint", "--grad-checkpoint", {**flag, "help": "activation checkpointing in every training run (recorded in the recipe)"}),
        ("autocast", "--autocast", {"default": None, "help": "bf16: bf16 autocast of forward and loss in every training run, CUDA only (recorded in the recipe)"}),
        ("memory_tasks", "--memory-tasks", {"default": None, "help": "synthetic memory tasks (default: mqar,selective-copy,induction-heads; e.g. mqar-v128-p16)"}),
        ("launcher", "--launcher", {"default": "local", "help": "local (default: this process, or xdist workers with -n) or ray (each cell a Ray task; docs/scaling.md)"}),
        ("ray_address", "--ray-address", {"default": None, "help": "with --launcher ray: the cluster to join (HOST:PORT or auto; default: start a local Ray instance)"}),
        ("ray_cpus", "--ray-cpus", {"default": None, "help": "with --launcher ray: CPUs each CPU cell's task requests (default 1; a CUDA cell requests one GPU)"}),
        ("resume", "--resume", {"default": None, "metavar": "RESULTS_DIR", "help": "finish the run in RESULTS_DIR: run only its cells without a record, appending to its records"}),
        ("resume_failed", "--resume-failed", {**flag, "help": "with --resume: also rerun cells whose record is a failure or error"}),
    ]


def _raw_options(config: pytest.Config) -> dict[str, Any]:
    """The lmbench options as typed (``parse_options`` keywords), before validation."""
    return {name: config.getoption(flag) for name, flag, _ in _option_table()}


def _options(config: pytest.Config) -> Options:
    """Validated options, and the raw values they came from (stashed: the plan of the run and Ray tasks use them).
    A resumed run takes the options that define its cells, its run id and its folder from the run's plan."""
    workerinput = getattr(config, "workerinput", {})
    task = config.stash.get(TASK_KEY, None)
    raw = _raw_options(config)
    run_id = workerinput.get("lmbench_run_id") or (task.run_id if task else None)
    try:
        if raw["resume"]:
            from harness.launch.resume import load_plan, restore_options

            plan = load_plan(raw["resume"])
            defaults = {name: kw.get("default") for name, _, kw in _option_table()}
            raw = restore_options(raw, defaults, plan, raw["resume"])
            run_id = plan["run_id"]
        if raw["launcher"] == "ray" and getattr(config.option, "numprocesses", None):
            raise OptionsError("--launcher ray and -n are two ways to run cells in parallel: drop -n "
                               "(Ray schedules the cells)")
        options = parse_options(
            **raw, run_id=run_id, worker=workerinput.get("workerid") or (task.worker if task else None),
            results_root=config.rootpath / "reports" / "results",
        )
    except OptionsError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[RAW_KEY] = raw
    return options


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
    task = config.stash.get(TASK_KEY, None)  # this process is a Ray task running one cell
    if options.worker is None and task is None:  # the controller checks once; workers write into the folder it checked
        _check_results_dir(options)
        for message in options.warnings:
            config.issue_config_time_warning(LmbenchWarning(message), stacklevel=2)
    if options.launcher == "ray" and options.worker is None:
        from harness.launch.ray import RayLauncher

        launcher = RayLauncher(options)
        try:
            launcher.connect(config.rootpath)  # settles --device auto against the cluster's GPUs
        except OptionsError as exc:
            launcher.shutdown()
            raise pytest.UsageError(str(exc)) from None
        config.stash[LAUNCHER_KEY] = launcher
    os.environ["LMBENCH_CACHE_DIR"] = str(options.cache_dir)  # the kernel build cache follows --cache-dir too
    from harness.reporting.spec import check_report_tables
    from harness.results.baseline import BaselineError
    from harness.results.targets import TargetsError
    from harness.session import Session

    try:
        check_report_tables(options.targets_dir)
        config.stash[SESSION_KEY] = Session(options)
    except (BaselineError, TargetsError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if options.resume is not None:
        _start_resume(config, options)
    if options.worker is not None:
        import torch

        from harness.launch.devices import split_threads

        torch.set_num_threads(task.threads if task else split_threads(int(config.workerinput.get("workercount", 1))))
    if task is None:  # in a Ray worker, Ray owns the signals
        _sigterm_as_interrupt()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_Xdist(options.run_id, config), "lmbench-xdist")


def _start_resume(config: pytest.Config, options: Options) -> None:
    """Read what the resumed run planned and measured (every process of this session reads it before any cell of
    this session runs, so they agree) and, in the controller, end a line a killed writer left unterminated."""
    from harness.launch.resume import cells_done, load_plan, run_records

    plan = load_plan(options.results_dir)
    done = cells_done(run_records(options.results_dir), options.resume_failed)
    config.stash[RESUME_KEY] = {"planned": plan["cells"], "done": done, "command": plan.get("command", [])}


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config):
    """``-n N`` without ``--dist``: xdist's ``loadgroup`` instead of ``load``, so the cells sharing trained weights
    (one ``xdist_group`` per ``train_key``, see ``_Xdist``) run on one worker: it trains, the others reuse."""
    opt = config.option
    if getattr(opt, "dist", None) == "no" and getattr(opt, "numprocesses", None) and not getattr(opt, "distload", 0):
        opt.dist = "loadgroup"
    return (yield)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``loadgroup`` that never reruns the test that crashed a worker (harness/launch/xdist.py says why)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from harness.launch.xdist import CrashSafeLoadGroupScheduling

    return CrashSafeLoadGroupScheduling(config, log)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` with CUDA: one worker per GPU (on CPU, xdist's count: one per core, sharing the cores out)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # the user's explicit count (xdist reads it)
    from harness.launch.devices import auto_workers

    return auto_workers(config.getoption("--device"), config.getoption("--gpu"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    lm = config.stash.get(SESSION_KEY, None)
    if lm is None:
        return []
    launcher = config.stash.get(LAUNCHER_KEY, None)
    return [f"lmbench: {launcher.describe()}"] if launcher is not None else []


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """A resumed run says, even under -q, how much of the run is done and how much runs now."""
    config = session.config
    state = config.stash.get(RESUME_KEY, None)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    lm = config.stash.get(SESSION_KEY, None)
    if state is None or tr is None or lm is None or lm.options.worker is not None:
        return
    planned = state["planned"]
    finished = sum(1 for cid in planned if cid in state["done"])
    kind = "a final record that is no failure" if lm.options.resume_failed else "a final record"
    tr.write_line(f"lmbench: resuming run {lm.options.run_id} in {lm.options.results_dir}: {finished} of "
                  f"{len(planned)} cells have {kind}; running the other {len(planned) - finished}")


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


class _Xdist:
    """Under xdist: hands the controller's run id to every worker so they write into one results folder, (with
    ``--dist loadgroup``, the default lmbench picks for ``-n``) groups the cells that share trained weights, and
    gives a test whose worker crashed (a segfault, the OOM killer, ``os._exit``) a record: status ``error`` with the
    crash reason."""

    def __init__(self, run_id: str, config: pytest.Config) -> None:
        self.run_id = run_id
        self.config = config
        self.down: dict[str, str] = {}

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:  # xdist hook
        node.workerinput["lmbench_run_id"] = self.run_id
        # Workers re-parse the command line, so a --dist chosen by lmbench (not typed) must be handed on.
        node.workerinput["lmbench_loadgroup"] = node.config.getoption("dist", "no") == "loadgroup"

    @pytest.hookimpl(tryfirst=True)  # before xdist's worker appends the group to each node id
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if getattr(config, "workerinput", {}).get("lmbench_loadgroup"):
            config.option.loadgroup = True  # what xdist's worker reads to append each item's group to its id
        if not getattr(config.option, "loadgroup", False):
            return
        for item in items:
            if item.get_closest_marker("xdist_group") is None and _is_benchmark(item):
                group = _item_cell(item).train_group
                if group is not None:
                    item.add_marker(pytest.mark.xdist_group(group))


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
        at = crashitem.rfind("@")  # loadgroup's "@group" suffix: records name the test as a serial run does
        rec = _running_record(lm.options.results_dir, wid, crashitem[:at] if at > crashitem.rfind("]") else crashitem)
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


def _is_benchmark(item: pytest.Item) -> bool:
    return any(m.name in BENCHMARK_MARKERS for m in item.iter_markers())


def _test_id(item: pytest.Item) -> str:
    """The item's node id as a serial run has it: without the ``@group`` xdist's loadgroup appends."""
    nodeid = item.nodeid
    at = nodeid.rfind("@")
    if at > nodeid.rfind("]") and item.get_closest_marker("xdist_group") is not None:
        return nodeid[:at]
    return nodeid


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
        varying += sorted(k for k in fixed if k not in varying)
        metafunc.parametrize("cell", cells, ids=[c.label(varying) for c in cells])
    values = session.options.axis_values()
    pinned = {n for m in definition.iter_markers("parametrize") if m.args for n in _argnames(m.args[0])}
    for argname, axis in RAW_AXES.items():
        if argname in metafunc.fixturenames and argname not in pinned:
            ids = [f"s{v}" if axis == "seed" else str(v) for v in values[axis]]
            metafunc.parametrize(argname, values[axis], ids=ids)
    for argname in TASK_ARGS:
        if argname in metafunc.fixturenames and argname not in pinned:
            names = _task_values(session.options.tasks, argname)
            metafunc.parametrize(argname, names, ids=names)


def _task_values(tasks: list[str], argname: str) -> list[str]:
    """The selected tasks for a task argument: all of them, or (``finetune_task``) those with a fine-tuning recipe.
    An empty list (``--tasks piqa`` for the fine-tuning test) deselects the test (``pytest_collection_modifyitems``)."""
    if argname == "finetune_task":
        from harness.downstream.tasks import finetune_task_names

        return finetune_task_names(tasks)
    return list(tasks)


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
    emptied = [it for it in items if _emptied_by_options(it)]
    if emptied:  # e.g. the fine-tuning test under --tasks piqa: nothing selected for it, not a skip
        config.hook.pytest_deselected(items=emptied)
        items[:] = [it for it in items if it not in emptied]
    for item in items:
        gpu = item.get_closest_marker("gpu")
        needs_cuda = gpu is not None and (not gpu.kwargs.get("optional", False) or opts.gpu)
        if needs_cuda and (not torch.cuda.is_available() or opts.device == "cpu"):
            item.add_marker(no_cuda)
        params = getattr(item, "callspec", None).params if hasattr(item, "callspec") else {}
        cell = _item_cell(item) if isinstance(params.get("cell"), Cell) else None
        if cell is not None:
            reason = session.skip_reason(cell)
        elif params.get("dataset_name") in opts.unavailable:
            ds = params["dataset_name"]
            reason = f"dataset {ds} not available: {opts.unavailable[ds]}"
        else:
            reason = None
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
    state = config.stash.get(RESUME_KEY, None)
    if state is not None:
        _select_unfinished(config, items, state)


def _select_unfinished(config: pytest.Config, items: list[pytest.Item], state: dict[str, Any]) -> None:
    """A resumed run runs only the planned cells without a final record; everything else is deselected."""
    keep, drop = [], []
    for item in items:
        cid = _item_cell(item).cell_id if _is_benchmark(item) else None
        (keep if cid in state["planned"] and cid not in state["done"] else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    collected = {_item_cell(it).cell_id for it in keep}
    missing = [cid for cid in state["planned"] if cid not in state["done"] and cid not in collected]
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if missing and tr is not None and not hasattr(config, "workerinput"):
        tr.write_line(f"lmbench: {len(missing)} unfinished cells of the run are not among the tests collected here; "
                      f"give the run's test paths (it ran: pytest {' '.join(state['command'])})", yellow=True)


def _write_plan(session: pytest.Session) -> None:
    """``run.json``: the run's options and cells, what ``--resume`` needs. Written by the process that collected
    (xdist: its first worker; the controller collects nothing), once per run (a resumed run keeps its plan)."""
    config = session.config
    lm = config.stash.get(SESSION_KEY, None)
    if lm is None or lm.options.resume is not None or lm.options.worker not in (None, "gw0") \
            or config.option.collectonly:
        return
    cells = [(_item_cell(it).cell_id, _test_id(it)) for it in session.items if _is_benchmark(it)]
    if not cells:
        return
    from harness.launch.resume import write_plan

    write_plan(lm.options.results_dir, lm.options.run_id, config.stash[RAW_KEY], lm.options.device_type, cells,
               [str(a) for a in config.invocation_params.args])


def _emptied_by_options(item: pytest.Item) -> bool:
    """A test whose task parameter list the options made empty (pytest marks those 'got empty parameter set')."""
    return any(m.name == "skip" and "empty parameter set" in str(m.kwargs.get("reason", ""))
               and any(a in str(m.kwargs.get("reason", "")) for a in TASK_ARGS) for m in item.iter_markers())


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    _warn_unused_options(config, session.items)
    _write_plan(session)
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
        import time

        self.session = session
        self.cell = cell
        self.record = session.new_record(cell, _test_id(item))
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

    def fresh(self, cell: Cell | None = None):
        """The cell's model untrained (``harness.provision.Fresh``), for speed and memory benchmarks."""
        from harness.provision import SkipCell

        try:
            fm = self.session.fresh(cell or self.cell)
        except SkipCell as exc:
            pytest.skip(str(exc))
        self.provenance = fm.provenance()
        self.record.params, self.record.config_hash = self.provenance.params, self.provenance.weights_key
        self.record.train = self.provenance.train
        return fm

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
    return b


@pytest.fixture
def provision(bench: Bench) -> Callable:
    """``provision(cell=None)`` → a private trained copy of the test's cell model (``harness.provision``)."""
    return bench.provision


def _item_cell(item: pytest.Item) -> Cell:
    """The item's cell: its ``cell`` parameter, or one built from its other parameters (e.g. a kernel's mode)."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    if isinstance(params.get("cell"), Cell):
        # Other parameters of the test (a downstream task) are part of what it measures: they join the cell id.
        cell = params["cell"]
        extra = {TASK_ARGS.get(k, k): _simple(v) for k, v in params.items() if k != "cell" and k not in RAW_AXES}
        return cell.replace(params=tuple(sorted((dict(cell.params) | extra).items()))) if extra else cell
    session = _session(item.config)
    raw = {RAW_AXES[k]: v for k, v in params.items() if k in RAW_AXES}
    others = tuple(sorted((TASK_ARGS.get(k, k), _simple(v)) for k, v in params.items() if k not in RAW_AXES))
    has_model = "model" in raw or "dataset" in raw
    bench_name = _benchmark_name(item)
    return Cell(benchmark=bench_name, measure=_measure_name(item, bench_name),
                tokenizer=session.options.tokenizer if "dataset" in raw else None,
                budget=session.options.budget if has_model else None, device=session.options.device_type,
                params=others, **raw)


def _simple(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) else str(value)


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
    from harness.files import atomic_write
    from harness.results.records import dumps

    try:
        rec = session.new_record(_item_cell(item), _test_id(item))
        session.options.results_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(_running_file(session.options.results_dir, session.options.worker), dumps(rec.to_dict()),
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
        rec = session.new_record(_item_cell(item), _test_id(item))
    from harness.session import now

    rec.status, rec.reason = _status(report, call, rec)
    rec.finished_at = now()
    rec.duration_s = report.duration if report.when == "call" else 0.0
    _plots(session, rec, report, item.config)
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
    _report_record(item, report, rec)


def _plots(session, rec: Record, report: pytest.TestReport, config: pytest.Config) -> None:
    """Plots of the record's benchmark (``harness.reporting.plots``), saved beside the records and named in its
    artefacts (``_report_record`` attaches artefacts to the Allure test and the pytest-html row)."""
    from harness.reporting import plots

    try:
        paths = plots.for_record(session.options.results_dir, rec.to_dict(), session.run_records)
    except Exception as exc:  # a plot is never worth the record: say why it is missing, keep the measurement
        rec.notes = "; ".join(n for n in (rec.notes, f"plot not drawn: {type(exc).__name__}: {exc}") if n)
        return
    rec.artefacts.update({name: str(path) for name, path in paths.items()})


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


def _report_record(item: pytest.Item, report: pytest.TestReport, rec: Record) -> None:
    """Every record, skipped ones included, goes into the Allure test of its cell (labels, parameters, the record,
    plots) and into its pytest-html row (a metrics table, plots, and the headline in the results table)."""
    from harness.reporting import allure as allure_report
    from harness.reporting import pytest_html as html_report

    config = item.config
    data = rec.to_dict()
    base = _session(config).options.results_dir
    if allure_report.active(config):
        allure_report.attach_record(data, rec.cell_id, base)
    if html_report.active(config):
        headline = _headline(config, rec.benchmark)
        report.extras = list(getattr(report, "extras", [])) + html_report.extras(data, headline, base)
        report.lmbench_metrics = html_report.headline_text(data, headline)


def _headline(config: pytest.Config, benchmark: str) -> tuple[str, ...]:
    from harness.reporting.spec import report_spec

    cache = config.stash.setdefault(HEADLINE_KEY, {})
    if benchmark not in cache:
        cache[benchmark] = report_spec(benchmark, _session(config).options.targets_dir).headline
    return cache[benchmark]


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells: list[str]) -> None:
    cells.insert(2, "<th>lmbench metrics</th>")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report: pytest.TestReport, cells: list[str]) -> None:
    import html

    cells.insert(2, f"<td>{html.escape(getattr(report, 'lmbench_metrics', '') or '')}</td>")


# ------------------------------------------------------------------------------------------ Ray launcher


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """``--launcher ray``: the items run as Ray tasks (``harness.launch.ray``); their reports come back here."""
    config = session.config
    launcher = config.stash.get(LAUNCHER_KEY, None)
    if launcher is None:
        return None
    if session.testsfailed and not config.option.continue_on_collection_errors:
        raise session.Interrupted(f"{session.testsfailed} error{'s' if session.testsfailed != 1 else ''} "
                                  "during collection")
    if config.option.collectonly or not session.items:
        return True
    from harness.launch.ray import TaskSpec, task_args

    lm = _session(config)
    opts = lm.options
    raw = {k: v for k, v in config.stash[RAW_KEY].items()
           if k not in ("launcher", "ray_address", "ray_cpus", "resume", "resume_failed", "results_dir")}
    raw |= {"device": opts.device_type, "cache_dir": str(opts.cache_dir), "targets_dir": str(opts.targets_dir),
            "data_dir": str(opts.data_dir) if opts.data_dir else None}
    flags = {name: flag for name, flag, _ in _option_table()}
    spec = TaskSpec(rootdir=str(config.rootpath), invocation_dir=str(config.invocation_params.dir),
                    args=task_args(raw, flags, config.invocation_params.args), run_id=opts.run_id,
                    results_dir=str(opts.results_dir), threads=opts.ray_cpus)

    def fail_record(item: pytest.Item, message: str) -> None:
        if not _is_benchmark(item):
            return
        from harness.session import now

        rec = lm.new_record(_item_cell(item), _test_id(item))
        rec.status, rec.reason, rec.finished_at, rec.duration_s = "error", message, now(), 0.0
        lm.writer().write(rec)

    items = [(it, _item_cell(it).train_group if _is_benchmark(it) else None) for it in session.items]
    launcher.run(session, spec, items, fail_record)
    return True


def pytest_unconfigure(config: pytest.Config) -> None:
    launcher = config.stash.get(LAUNCHER_KEY, None)
    if launcher is not None:
        launcher.shutdown()


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
    resumed = config.stash.get(RESUME_KEY, None) is not None
    if (config.stash.get(EMPTY_KEY, False) or resumed) and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK  # a valid selection that matches nothing (or a finished run)
    results_dir = lm.options.results_dir
    if not results_dir.is_dir():
        return
    import warnings

    from harness.reporting.summary import summarize_folder

    opts = lm.options
    records: list[dict] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            records, config.stash[REPORT_KEY] = summarize_folder(
                results_dir, opts.run_id, opts.public(), command=_command(config), targets_dir=opts.targets_dir)
            from harness.reporting.perf import write_perf_reports

            write_perf_reports(results_dir, records)  # throughput.md, memory.md, efficiency.md where they apply
        except OSError as exc:
            _note(config, f"could not write the summary in {results_dir}: {exc.strerror or exc}; every record is "
                          f"kept; once there is space run: python -m harness.reporting.summary {results_dir}")
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
    for w in caught:
        _note(config, f"warning: {w.message}")
    if opts.update_baseline:
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            # Half a run's cells would quietly mix two states of the code in one baseline: refuse, and say so.
            config.stash[BASELINE_WRITTEN_KEY] = (f"baseline not written: the run was interrupted; {opts.baseline} "
                                                  "is unchanged (re-run to completion with --update-baseline)")
        else:
            config.stash[BASELINE_WRITTEN_KEY] = _write_baseline(lm, records, _command(config))
    from harness.reporting.latest import point_latest

    point_latest(config.rootpath / "reports" / "results", results_dir)
    from harness.reporting import allure as allure_report

    if allure_report.active(config):
        allure_report.write_environment(config.getoption("--alluredir"), records, opts.public())


def _command(config: pytest.Config) -> str:
    """The command as typed (``pytest`` and its arguments), for summaries and baselines to say how to re-run."""
    import shlex

    return shlex.join(["pytest", *config.invocation_params.args])


def _write_baseline(lm, records: list[dict], command: str):
    """``--update-baseline``: this run's passed cells replace theirs in the file (others are kept), atomically."""
    from harness.results.baseline import from_records, updated, write_baseline
    from harness.results.gate import gate_for

    opts = lm.options
    env = next((r.get("environment") for r in records if r.get("environment")), {}) or {}
    new = from_records(records, lambda bench, budget: gate_for(bench, budget, opts.targets_dir),
                       meta={"command": command, "run_id": opts.run_id, "git_commit": env.get("git_commit"),
                             "environment": {k: env.get(k) for k in ("python", "torch", "cpu", "gpu", "device",
                                                                     "torch_threads", "platform")}})
    baseline = updated(lm.baseline, new)
    write_baseline(baseline, opts.baseline)
    return opts.baseline, len(new.cells), len(baseline.cells)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lm = config.stash.get(SESSION_KEY, None)
    notes = config.stash.get(NOTES_KEY, [])
    if lm is None or lm.options.worker is not None:
        return
    has_summary = (lm.options.results_dir / "summary.md").exists()
    if not (has_summary or notes):
        return
    from harness.reporting.terminal import lines

    tr = terminalreporter
    tr.write_sep("-", "lmbench")
    for line in notes:
        tr.write_line(f"lmbench: {line}", yellow=True)
    rep = config.stash.get(REPORT_KEY, None)
    for line in lines(rep) if rep is not None else []:
        red = line.lstrip().startswith("REGRESSED")
        tr.write_line(line, red=red, bold=red)
    written = config.stash.get(BASELINE_WRITTEN_KEY, None)
    if isinstance(written, str):
        tr.write_line(written, yellow=True, bold=True)
    elif written:
        path, n_new, n_all = written
        tr.write_line(f"baseline written: {path} ({n_new} cells from this run, {n_all} in the file)", green=True)
    if has_summary:
        d = lm.options.results_dir
        tr.write_line(f"records: {d / 'records.jsonl'}")
        tr.write_line(f"summary: {d / 'summary.md'} · {d / 'summary.html'}")
