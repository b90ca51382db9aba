"""A session: options → cells → provision → measure → finalise, usable with or without pytest.

    from harness.options import parse_options
    from harness.session import Session
    from harness.measure import perplexity

    session = Session(parse_options(models="transformer", budget="micro"))
    for cell in session.cells("perplexity"):
        pm = session.provision(cell)
        record, verdict = session.finalize(cell, perplexity.measure(pm), pm.provenance())

The pytest plugin is a thin layer over this class: it parametrizes tests with ``session.cells(...)``, hands
``session.provision`` to tests and turns ``session.finalize``'s verdict into the test outcome.
"""
from __future__ import annotations

import datetime as _dt
import itertools
from typing import Any, Iterable

from harness.cells import AXES, DEFAULT_AXES, Cell
from harness.config import EvalConfig, TrainConfig
from harness.data.base import DataContext
from harness.launch.devices import describe, worker_device
from harness.measure.result import Result
from harness.options import Options
from harness.provision import DataStore, Fresh, Provenance, Provisioned, Provisioner
from harness.results.finalize import Verdict, finalize
from harness.results.records import RECORDS_FILE, Record, RecordWriter, worker_file


class Session:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.device = worker_device(options.device_type, options.worker)
        ctx = DataContext(data_dir=options.data_dir, cache_dir=options.cache_dir, allow_hub=options.allow_hub)
        self.data = DataStore(ctx, options.tokenizer)
        self._provisioner: Provisioner | None = None
        self._absent: dict[tuple[str, str], str | None] = {}  # ("dataset"|"task", name) -> why not here
        self.baseline = self._load_baseline()

    def _load_baseline(self):
        """The ``--baseline`` file, read and checked now (``BaselineError``: a usage error before anything runs),
        with every ``[gate]`` table it will be judged by. Under ``--update-baseline`` a file that does not exist yet
        is fine: every cell is new."""
        o = self.options
        if o.baseline is None:
            return None
        from harness.config import BUDGET_NAMES
        from harness.results.baseline import BaselineError, load_baseline
        from harness.results.gate import check_gate_tables
        from harness.results.targets import TargetsError

        try:
            check_gate_tables(o.targets_dir, BUDGET_NAMES)
        except TargetsError as exc:
            raise BaselineError(str(exc)) from None
        if o.update_baseline and not o.baseline.exists():
            return None
        return load_baseline(o.baseline)

    # -- cells
    def cells(self, benchmark: str, axes: Iterable[str] = DEFAULT_AXES, fixed: dict[str, Any] | None = None,
              defaults: dict[str, list[Any]] | None = None, options: Iterable[str] = ()) -> list[Cell]:
        """The cells of ``benchmark``: the product of the options' values on ``axes``. ``fixed`` pins an axis to
        given values; ``defaults`` gives an axis's values when the user did not choose them (quantization: every
        width). Axes not varied take their defaults: the budget's length, fp32 weights. ``options`` names options
        that are part of each cell's identity when set (e.g. ``group_size``).

        A ``fixed`` value may name a list the options define (``seq_len="long"``: the budget's long-context sweep
        unless ``--seq-lens``; ``task="memory_tasks"``: ``--memory-tasks``), and a ``fixed`` key that is no cell axis is a
        parameter of the benchmark (``Cell.params``, part of the cell id). Without a dataset axis a cell has no
        tokenizer either (a synthetic task brings its own vocabulary)."""
        fixed = {k: self._named(k, v) for k, v in (fixed or {}).items()}
        unknown = (set(defaults or {}) | set(axes)) - set(AXES)
        if unknown:
            raise ValueError(f"unknown cell axes {sorted(unknown)}; valid: {', '.join(AXES)}")
        axes = [a for a in AXES if a in set(axes) | set(fixed)]
        extra = sorted(k for k in fixed if k not in AXES)
        values = self.options.axis_values()
        values |= {a: v for a, v in (defaults or {}).items() if not self.options.given(a)}
        values |= fixed
        params = tuple(sorted((name, _param(getattr(self.options, name))) for name in options
                              if getattr(self.options, name) not in (None, ())))
        base = Cell(benchmark=benchmark, tokenizer=self.options.tokenizer if "dataset" in axes else None,
                    budget=self.options.budget, seq_len=self.options.default_seq_len, bits="fp32",
                    device=self.options.device_type, params=params)
        cells = []
        for combo in itertools.product(*(values[a] for a in axes + extra)):
            cell = base.replace(**dict(zip(axes, combo[:len(axes)])))
            if extra:
                cell = cell.replace(params=tuple(sorted(cell.params + tuple(zip(extra, combo[len(axes):])))))
            cells.append(cell)
        return [self._own_tokenizer(c) if "dataset" in axes else c for c in cells]

    def _named(self, axis: str, value: Any) -> list[Any]:
        if not isinstance(value, str):
            return list(value)
        named = {"long": self.options.long_seq_lens, "memory_tasks": self.options.memory_tasks}
        if value not in named:
            raise ValueError(f"axis {axis}={value!r}: a named value list must be one of {', '.join(named)}")
        return list(named[value])

    @staticmethod
    def _own_tokenizer(cell: Cell) -> Cell:
        """A model that must use its own tokenizer (a checkpoint's) gets it, whatever ``--tokenizer`` says."""
        if cell.model is None:
            return cell
        from harness.models import get_model_spec

        own = get_model_spec(cell.model).tokenizer
        return cell.replace(tokenizer=own) if own else cell

    def skip_reason(self, cell: Cell) -> str | None:
        """Why a cell cannot run here without it being a failure (data absent, too long for the model)."""
        if cell.dataset in self.options.unavailable:
            return f"dataset {cell.dataset} not available: {self.options.unavailable[cell.dataset]}"
        if cell.dataset is not None and cell.dataset not in self.options.datasets:  # a benchmark's own default
            reason = self._availability("dataset", cell.dataset)
            if reason:
                return f"dataset {cell.dataset} not available: {reason}"
        task = dict(cell.params).get("task") if cell.benchmark == "downstream" else None
        if task is not None:
            reason = self._availability("task", task)
            if reason:
                return reason  # names the task and the files expected under the data directory
        if cell.model is not None:
            from harness.config import get_budget
            from harness.models import get_model_spec

            spec = get_model_spec(cell.model)
            if spec.fixed_shape and cell.budget and get_budget(cell.budget).preset not in spec.presets:
                return (f"model {cell.model} is a fixed published shape defined at --budget "
                        f"{', '.join(spec.presets)} only, not {cell.budget}")
            limit = spec.max_seq_len
            if limit is not None and cell.seq_len is not None and cell.seq_len > limit:
                return f"model {cell.model} supports at most {limit} positions; seq_len {cell.seq_len} exceeds it"
        task = dict(cell.params).get("task") if cell.benchmark == "synthetic" else None  # a memory task
        if task is not None and cell.seq_len is not None:
            from harness.data.memory_tasks import get_task

            need = get_task(task).min_len()
            if cell.seq_len < need:
                return f"task {task} needs sequences of at least {need} tokens; seq_len {cell.seq_len} is shorter"
        return None

    def _availability(self, kind: str, name: str) -> str | None:
        """Why a dataset or a downstream task cannot be loaded here (None if it can), once per name."""
        if (kind, name) not in self._absent:
            if kind == "dataset":
                from harness.data import dataset_availability

                self._absent[kind, name] = dataset_availability(name, self.data.ctx)
            else:
                from harness.downstream.tasks import task_availability

                self._absent[kind, name] = task_availability(name, self.data.ctx)
        return self._absent[kind, name]

    def run_skip_reason(self, cell: Cell, train_cfg: TrainConfig | None = None) -> str | None:
        """Why a cell should not run now, found only at run time: an earlier cell of this run ran out of memory at
        a shorter length (or the same training ran out of memory or time), or the predicted memory of training it
        exceeds the device (``Provisioner.predict_memory``: a lower bound, so only hopeless lengths are skipped)."""
        from harness.models import get_model_spec

        reason = self.oom_skip_reason(cell)
        if reason or cell.model is None or cell.dataset is None or get_model_spec(cell.model).pretrained is not None:
            return reason  # a pretrained checkpoint is never trained here: nothing to predict
        try:
            prediction = self.provisioner.predict_memory(cell, train_cfg)
        except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            from harness.provision.memory import is_out_of_memory

            if not is_out_of_memory(exc):
                raise
            return None  # even the short probe ran out of memory: training will, and is recorded as such
        if prediction.exceeds:
            return f"{cell.model} at seq_len {cell.seq_len:,}: {prediction.describe()}"
        return None

    def oom_skip_reason(self, cell: Cell) -> str | None:
        """An earlier record of this run that makes ``cell`` pointless: the same model (dataset, tokenizer, budget,
        device, parameters) ran out of memory at a shorter length, or its same training (seed and length) ran out
        of memory or time in another measurement of the benchmark."""
        if cell.seq_len is None or not self.options.results_dir.exists():
            return None
        mine = _id_fields(cell.cell_id)
        same = {k: v for k, v in mine.items() if k not in ("name", "seed", "seq_len", "bits")}
        for rec in self.run_records():
            if rec.get("status") not in ("oom", "timeout") or rec.get("benchmark") != cell.benchmark:
                continue
            theirs = _id_fields(rec.get("cell_id") or "")
            if any(theirs.get(k) != v for k, v in same.items()) or rec.get("seq_len") is None:
                continue
            length, status = int(rec["seq_len"]), rec["status"]
            if status == "oom" and length < cell.seq_len:
                return (f"{cell.model} ran out of memory at seq_len {length:,} in this run ({rec.get('cell_id')}): "
                        f"longer lengths skipped")
            if length == cell.seq_len and theirs.get("seed") == mine.get("seed") and rec.get("cell_id") != cell.cell_id:
                return f"the same training ran {'out of memory' if status == 'oom' else 'out of time'} in this run " \
                       f"({rec.get('cell_id')}): {rec.get('reason')}"
        return None

    def run_records(self) -> list[dict[str, Any]]:
        """Every record this run has written so far (this process's and, under xdist, the other workers')."""
        from harness.results.records import read_results

        return [r for r in read_results(self.options.results_dir) if r.get("run_id") == self.options.run_id]

    # -- provisioning
    @property
    def provisioner(self) -> Provisioner:
        if self._provisioner is None:
            self._provisioner = Provisioner(self.data, self.device, train_overrides=self.options.train_overrides)
        return self._provisioner

    def provision(self, cell: Cell, eval_cfg: EvalConfig | None = None, guard_fresh: bool = True,
                  **kwargs: Any) -> Provisioned:
        """A private trained copy of the cell's model. ``guard_fresh``: a model about to be trained is first probed
        by the causality guard at the evaluation shape; a leak skips training (``Provisioned.preflight``). Other
        keywords go to ``Provisioner.provision`` (``callback``, ``variant``, ``progress``, ``train_cfg``,
        ``deadline``, ``stopped_ok``)."""
        def guard(module, mcfg):
            return self._fresh_guard(module, mcfg, eval_cfg or self.provisioner.eval_config(cell))

        return self.provisioner.provision(cell, eval_cfg, preflight=guard if guard_fresh else None, **kwargs)

    def fresh(self, cell: Cell) -> Fresh:
        """``cell``'s model untrained, buildable at any length: for speed and memory measurements."""
        return self.provisioner.fresh(cell)

    @staticmethod
    def _fresh_guard(module, mcfg, eval_cfg: EvalConfig):
        from harness.measure.causality import check_causality
        from harness.provision.memory import is_out_of_memory

        batch = eval_cfg.batch_size
        try:
            found = check_causality(module, mcfg.vocab_size, seq_len=mcfg.max_seq_len, batch=batch, stage="fresh")
        except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(exc):
                raise
            return None  # the probe does not fit: training will not either, and records that as a result
        return found if found.leak else None

    # -- records
    def new_record(self, cell: Cell, test_id: str | None = None) -> Record:
        from harness.env import environment

        return Record(
            benchmark=cell.benchmark, test_id=test_id or cell.cell_id, cell_id=cell.cell_id, model=cell.model,
            dataset=cell.dataset, tokenizer=cell.tokenizer, bits=cell.bits, seq_len=cell.seq_len, seed=cell.seed,
            budget=cell.budget, environment=environment() | describe(self.device), run_id=self.options.run_id,
            worker=self.options.worker, started_at=now(),
        )

    def finalize(self, cell: Cell, result: Result, provenance: Provenance | None = None,
                 record: Record | None = None) -> tuple[Record, Verdict]:
        record = record or self.new_record(cell)
        verdict = finalize(record, cell, result, targets_dir=self.options.targets_dir, provenance=provenance,
                           baseline=self.gate_baseline, enforce_gate=not self.options.update_baseline)
        return record, verdict

    @property
    def gate_baseline(self):
        """What records are gated against: the loaded baseline, or an empty one when ``--update-baseline`` writes a
        new file (every cell then reports as new)."""
        if self.baseline is None and self.options.update_baseline:
            from harness.results.baseline import Baseline

            return Baseline(path=self.options.baseline)
        return self.baseline

    def writer(self) -> RecordWriter:
        o = self.options
        return RecordWriter(worker_file(o.results_dir, o.worker) if o.worker else o.results_dir / RECORDS_FILE)


def _id_fields(cell_id: str) -> dict[str, str]:
    """``bench|model=x|seed=0|…`` → {"name": "bench", "model": "x", "seed": "0", …}."""
    parts = cell_id.split("|")
    return {"name": parts[0]} | dict(p.split("=", 1) for p in parts[1:] if "=" in p)


def _param(value: Any) -> Any:
    return ",".join(value) if isinstance(value, (tuple, list)) else value


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
