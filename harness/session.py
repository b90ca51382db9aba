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
from harness.config import EvalConfig
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
    def cells(self, benchmark: str, axes: Iterable[str] = DEFAULT_AXES, fixed: dict[str, list[Any]] | None = None,
              defaults: dict[str, list[Any]] | None = None, options: Iterable[str] = ()) -> list[Cell]:
        """The cells of ``benchmark``: the product of the options' values on ``axes``. ``fixed`` pins an axis to
        given values; ``defaults`` gives an axis's values when the user did not choose them (quantization: every
        width). Axes not varied take their defaults: the budget's length, fp32 weights. ``options`` names options
        that are part of each cell's identity when set (e.g. ``group_size``)."""
        axes = [a for a in AXES if a in set(axes) | set(fixed or {})]
        unknown = (set(fixed or {}) | set(defaults or {}) | set(axes)) - set(AXES)
        if unknown:
            raise ValueError(f"unknown cell axes {sorted(unknown)}; valid: {', '.join(AXES)}")
        values = self.options.axis_values()
        values |= {a: v for a, v in (defaults or {}).items() if not self.options.given(a)}
        values |= fixed or {}
        params = tuple(sorted((name, _param(getattr(self.options, name))) for name in options
                              if getattr(self.options, name) not in (None, ())))
        base = Cell(benchmark=benchmark, tokenizer=self.options.tokenizer, budget=self.options.budget,
                    seq_len=self.options.default_seq_len, bits="fp32", device=self.options.device_type,
                    params=params)
        cells = [base.replace(**dict(zip(axes, combo))) for combo in itertools.product(*(values[a] for a in axes))]
        return [self._own_tokenizer(c) for c in cells]

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

    # -- provisioning
    @property
    def provisioner(self) -> Provisioner:
        if self._provisioner is None:
            self._provisioner = Provisioner(self.data, self.device)
        return self._provisioner

    def provision(self, cell: Cell, eval_cfg: EvalConfig | None = None, guard_fresh: bool = True,
                  **kwargs: Any) -> Provisioned:
        """A private trained copy of the cell's model. ``guard_fresh``: a model about to be trained is first probed
        by the causality guard at the evaluation shape; a leak skips training (``Provisioned.preflight``). Other
        keywords go to ``Provisioner.provision`` (``callback``, ``variant``, ``progress``)."""
        def guard(module, mcfg):
            return self._fresh_guard(module, mcfg, eval_cfg or self.provisioner.eval_config(cell))

        return self.provisioner.provision(cell, eval_cfg, preflight=guard if guard_fresh else None, **kwargs)

    def fresh(self, cell: Cell) -> Fresh:
        """``cell``'s model untrained, buildable at any length: for speed and memory measurements."""
        return self.provisioner.fresh(cell)

    @staticmethod
    def _fresh_guard(module, mcfg, eval_cfg: EvalConfig):
        from harness.measure.causality import check_causality

        batch = eval_cfg.batch_size
        found = check_causality(module, mcfg.vocab_size, seq_len=mcfg.max_seq_len, batch=batch, stage="fresh")
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


def _param(value: Any) -> Any:
    return ",".join(value) if isinstance(value, (tuple, list)) else value


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
