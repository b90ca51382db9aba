"""Provisioning: ``provision(cell)`` → a model to measure, from the weight cache or trained with the shared loop.

Why every caller gets its own copy: measurements change models (a quantized copy, another dtype, hooks); a test must
never see weights another test changed. The in-process memo keeps one pristine copy per weights key and hands out
deep copies; the on-disk cache (with a cross-process lock) makes other processes load instead of retraining.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from harness.cells import Cell
from harness.config import EvalConfig, TrainConfig, get_budget, stable_hash
from harness.data.base import Corpus, Tokenizer
from harness.models import (
    ModelConfig,
    ModelSpec,
    build_checked,
    check_output_contract,
    count_parameters,
    get_model_spec,
)
from harness.provision.data import DataStore
from harness.provision.memory import MemoryPrediction, predict_training_memory
from harness.provision.training import BatchSource, TrainingStopped, TrainResult, train
from harness.provision.weights import WeightCache, code_fingerprint

if TYPE_CHECKING:
    from harness.data.memory_tasks import MemoryTask

__all__ = ["DataStore", "Fresh", "Provenance", "Provisioned", "Provisioner", "SkipCell", "TrainingStopped", "resolve_device"]


class SkipCell(Exception):
    """The cell cannot run here for a reason that is not a failure (e.g. longer than the model's positions)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Provenance:
    """Where the measured weights came from: what every record of a provisioned model carries."""

    model: str
    family: str
    causal: bool
    notes: str
    params: dict[str, int]
    weights_key: str
    source: str  # "trained" | "cache" (loaded from disk) | "memo" (already in this process)
    preset: dict[str, Any]
    train_config: dict[str, Any]
    eval_config: dict[str, Any]
    train: dict[str, Any]  # TrainResult.summary(): the loss curve and its facts
    long_context: bool = False  # the registry entry claims long-context stability (ModelSpec.long_context)


@dataclass
class Provisioned:
    """A private, trained copy of a cell's model, with everything a measurement needs beside it."""

    cell: Cell
    module: nn.Module
    spec: ModelSpec
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    eval_cfg: EvalConfig
    train: TrainResult
    weights_key: str
    source: str
    tokenizer: Tokenizer
    corpus: Corpus
    data: DataStore = field(repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    params: dict[str, int] = field(default_factory=dict)
    deadline: float | None = None  # time.monotonic() after which the cell is out of time (--cell-timeout)
    memory_prediction: MemoryPrediction | None = None  # where one was made before training (Provisioner)
    task: "MemoryTask | None" = None  # the synthetic task it was trained on (then tokenizer and corpus are None)
    preflight: Any = None  # what the pre-training check found wrong (training was skipped), else None
    cache_note: str | None = None  # why the trained weights are not in the on-disk cache (read-only, full), else None

    @property
    def diverged(self) -> bool:
        return self.train.diverged

    def ids(self, split: str) -> np.ndarray:
        return self.data.ids(self.cell.dataset, split, self.cell.tokenizer)

    def byte_lengths(self, split: str) -> np.ndarray:
        return self.data.byte_lengths(self.cell.dataset, split, self.cell.tokenizer)

    def provenance(self) -> Provenance:
        notes = "; ".join(n for n in (self.spec.notes, self.cache_note) if n)
        cache = {"cache_error": self.cache_note} if self.cache_note else {}
        return Provenance(
            model=self.cell.model or self.spec.name, family=self.spec.family, causal=self.spec.causal,
            notes=notes, params=dict(self.params), weights_key=self.weights_key, source=self.source,
            preset=dict(self.model_cfg.preset), train_config=self.train_cfg.to_dict(),
            eval_config=self.eval_cfg.to_dict(), train=self.train.summary() | {"source": self.source} | cache,
            long_context=getattr(self.spec, "long_context", False),
        ) if self.spec.pretrained is None else Provenance(
            model=self.cell.model or self.spec.name, family=self.spec.family, causal=self.spec.causal,
            notes=self.spec.notes, params=dict(self.params), weights_key=self.weights_key, source=self.source,
            preset={}, train_config={"pretrained": self.spec.pretrained}, eval_config=self.eval_cfg.to_dict(),
            train={"source": self.source, "steps": 0, "tokens": 0},
        )


@dataclass
class Fresh:
    """A cell's model freshly initialised (seeded by the cell, never trained), buildable for any length.

    Why untrained: speed and memory are fixed by shapes, not by weights, for every built-in model (ResNet-BK's
    top-2 routing keeps the expert work per token fixed; only its balance across experts depends on training), and
    length sweeps need models built for more positions than the trained one has. Training them would cost minutes
    and measure nothing more."""

    cell: Cell
    spec: ModelSpec
    model_cfg: ModelConfig  # at the cell's training length
    train_cfg: TrainConfig
    weights_key: str
    tokenizer: Tokenizer
    data: DataStore = field(repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def build(self, max_seq_len: int | None = None, vocab_size: int | None = None) -> nn.Module:
        """A new instance for up to ``max_seq_len`` positions (default: the cell's length) and ``vocab_size`` tokens
        (default: the cell's tokenizer), seeded, on the device."""
        cfg = dataclasses.replace(self.model_cfg, max_seq_len=max_seq_len or self.model_cfg.max_seq_len,
                                  vocab_size=vocab_size or self.model_cfg.vocab_size)
        torch.manual_seed(self.cell.seed or 0)
        return self.spec.build(cfg).to(self.device)

    def ids(self, split: str) -> np.ndarray:
        return self.data.ids(self.cell.dataset, split, self.cell.tokenizer)

    def provenance(self) -> Provenance:
        return Provenance(
            model=self.cell.model or self.spec.name, family=self.spec.family, causal=self.spec.causal,
            notes=self.spec.notes, params=count_parameters(self.build()), weights_key=self.weights_key,
            source="init", preset=dict(self.model_cfg.preset), train_config=self.train_cfg.to_dict(),
            eval_config={}, train={"source": "init"},
        )


class Provisioner:
    """Builds, trains or loads, and hands out copies. One per process; safe to call from several threads."""

    def __init__(self, data: DataStore, device: torch.device, memo_size: int = 8,
                 train_overrides: dict[str, Any] | None = None) -> None:
        self.data = data
        self.device = device
        self.cache = WeightCache(data.ctx.cache_dir)
        self.memo_size = memo_size
        # Session-wide recipe switches that every training run gets (bf16 autocast, activation checkpointing):
        # part of the TrainConfig, so of the weights key and of every record's protocol.
        self.train_overrides = dict(train_overrides or {})
        self._memo: OrderedDict[str, tuple[nn.Module, TrainResult, str]] = OrderedDict()
        self._predictions: dict[str, MemoryPrediction] = {}
        self._lock = threading.RLock()
        self._checked: set[str] = set()  # weights keys whose model passed the output-contract check
        self._uncached: dict[str, str] = {}  # weights key -> why its trained weights could not be cached

    # -- configuration of a cell
    def train_config(self, cell: Cell, base: TrainConfig | None = None) -> TrainConfig:
        """The cell's recipe: ``base`` (default: the budget's) at the cell's length, with the session overrides."""
        base = base or get_budget(cell.budget).train
        cfg = base.at_seq_len(cell.seq_len) if cell.seq_len else base
        return dataclasses.replace(cfg, **self.train_overrides) if self.train_overrides else cfg

    def eval_config(self, cell: Cell) -> EvalConfig:
        return get_budget(cell.budget).eval

    def weights_config(self, cell: Cell, train_cfg: TrainConfig | None = None
                       ) -> tuple[ModelSpec, ModelConfig, dict[str, Any]]:
        """The model spec and config of ``cell`` and the dict whose hash keys its weights."""
        if cell.train_key is None:
            raise ValueError(f"cell {cell.cell_id} has no model and dataset to provision")
        spec = get_model_spec(cell.model)
        tcfg = self.train_config(cell, train_cfg)
        if spec.max_seq_len is not None and tcfg.seq_len > spec.max_seq_len:
            raise SkipCell(f"model {cell.model} supports at most {spec.max_seq_len} positions; "
                           f"seq_len {tcfg.seq_len} exceeds it")
        if spec.pretrained is not None:
            from harness.models.pretrained import weights_fingerprint

            return spec, ModelConfig(vocab_size=0, max_seq_len=tcfg.seq_len), {
                "pretrained": spec.pretrained, "files": weights_fingerprint(spec.pretrained)}
        missing = self.data.corpus(cell.dataset).meta.get("missing_splits") or []
        if "train" in missing:
            raise SkipCell(f"dataset {cell.dataset} has no train split here, so {cell.model} cannot be trained on it; "
                           f"only pretrained models (hf:PATH) are evaluated on it")
        tok = self.data.tokenizer(cell.dataset, cell.tokenizer)
        mcfg = spec.config(tok.vocab_size, tcfg.seq_len, get_budget(cell.budget).preset)
        config = {
            "model": cell.model,
            "family": spec.family,
            "preset": mcfg.preset,
            "vocab_size": mcfg.vocab_size,
            "max_seq_len": mcfg.max_seq_len,
            "dataset": cell.dataset,
            "tokenizer": tok.name,
            "data_fingerprint": self.data.fingerprint(cell.dataset, cell.tokenizer),
            "seed": cell.seed,
            "train": tcfg.to_dict(),
            "code": code_fingerprint(spec.build, spec.code),
            "torch": torch.__version__.split("+")[0],
            "device_type": cell.device,
        }
        return spec, mcfg, config

    def fresh(self, cell: Cell) -> Fresh:
        """``cell``'s model untrained (see ``Fresh``): for measurements of speed and memory."""
        spec, mcfg, config = self.weights_config(cell)
        if spec.pretrained is not None:
            raise SkipCell(f"{cell.model} is a checkpoint evaluated as is: speed and memory are measured on "
                           "architectures lmbench builds (a fresh instance at every swept length)")
        return Fresh(cell=cell, spec=spec, model_cfg=mcfg, train_cfg=self.train_config(cell),
                     weights_key=stable_hash(config | {"init": True}),
                     tokenizer=self.data.tokenizer(cell.dataset, cell.tokenizer),
                     data=self.data, device=self.device)

    # -- the one entry point
    def provision(self, cell: Cell, eval_cfg: EvalConfig | None = None,
                  progress: Callable[[int, float], None] | None = None,
                  preflight: Callable[[nn.Module, ModelConfig], Any] | None = None,
                  callback: Callable[[int, nn.Module], dict | None] | None = None,
                  variant: str | None = None, *,
                  train_cfg: TrainConfig | None = None, deadline: float | None = None,
                  stopped_ok: bool = False) -> Provisioned:
        """A private trained copy of ``cell``'s model: from this process's memo, the disk cache, or trained now.

        ``preflight(module, model_cfg)`` runs on the freshly built model when it would be trained; a non-None answer
        (e.g. a leak found by the causality guard) skips training — fail in seconds, not after minutes — and is
        handed to the measurement as ``Provisioned.preflight``. Such an untrained model is never memoised.

        ``callback`` is handed to the training loop (e.g. evaluations every k steps, kept in ``train.evals``); a run
        with one must name a ``variant``, which keys its weights apart from the plain run's (the weights are the
        same, but a plain run's cache entry has no evaluations to give back).

        ``train_cfg``: another recipe than the budget's (e.g. the long-context one), applied at the cell's length.
        ``deadline`` (``time.monotonic()``): training stops between steps once it has passed. A run stopped for
        lack of memory or time raises ``TrainingStopped`` (with the partial log) unless ``stopped_ok``: then the
        partial model is returned with ``train.stop`` set, for measurements that record such runs.
        """
        if callback is not None and not variant:
            raise ValueError("a training callback needs a variant name: its runs are cached under their own key")
        spec, mcfg, config = self.weights_config(cell, train_cfg)
        if variant:
            config = config | {"variant": variant}
        key = stable_hash(config)
        tcfg = self.train_config(cell, train_cfg)
        eval_cfg = eval_cfg or self.eval_config(cell)
        data = {"tokenizer": self.data.tokenizer(cell.dataset, cell.tokenizer), "corpus": self.data.corpus(cell.dataset)}
        if preflight is not None and spec.pretrained is None and key not in self._memo \
                and not all(p.exists() for p in self.cache.paths(key)):
            fresh = self._build(cell, spec, mcfg, key).to(self.device)
            found = preflight(fresh, mcfg)
            if found is not None:
                return Provisioned(
                    cell=cell, module=fresh.eval(), spec=spec, model_cfg=mcfg, train_cfg=tcfg, eval_cfg=eval_cfg,
                    train=TrainResult(0, 0), weights_key=key, source="not trained", data=self.data,
                    device=self.device, params=count_parameters(fresh), preflight=found, deadline=deadline, **data)
        return self._provide(cell, spec, mcfg, tcfg, key, None, eval_cfg, progress, deadline, stopped_ok, callback,
                             **data)

    def provision_task(self, cell: Cell, task: "MemoryTask", train_cfg: TrainConfig, *,
                       deadline: float | None = None, stopped_ok: bool = False) -> Provisioned:
        """A private copy of ``cell``'s model trained from scratch on a synthetic memory task with the shared loop
        (a batch source with a loss mask instead of token-stream windows). Its weights key hashes the task's
        configuration and the generator's source instead of a corpus fingerprint."""
        from harness.data import memory_tasks

        spec = get_model_spec(cell.model)
        tcfg = self.train_config(cell, train_cfg)
        if spec.max_seq_len is not None and tcfg.seq_len > spec.max_seq_len:
            raise SkipCell(f"model {cell.model} supports at most {spec.max_seq_len} positions; "
                           f"seq_len {tcfg.seq_len} exceeds it")
        mcfg = spec.config(task.vocab_size, tcfg.seq_len, get_budget(cell.budget).preset)
        config = {
            "model": cell.model, "family": spec.family, "preset": mcfg.preset, "vocab_size": mcfg.vocab_size,
            "max_seq_len": mcfg.max_seq_len, "task": task.config() | {"kind": type(task).__name__},
            "seed": cell.seed, "train": tcfg.to_dict(),
            "code": code_fingerprint(spec.build, tuple(spec.code) + (memory_tasks.__name__,)),
            "torch": torch.__version__.split("+")[0], "device_type": cell.device,
        }
        key = stable_hash(config)
        device, seed = self.device, cell.seed or 0

        def batches() -> BatchSource:
            batch = tcfg.batch_size

            def draw(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                b = task.sample(memory_tasks.task_rng(memory_tasks.TRAIN_STREAM, seed, step), batch, tcfg.seq_len)
                ids = torch.from_numpy(b.ids).to(device)
                return ids[:, :-1], ids[:, 1:], torch.from_numpy(b.mask).to(device)

            return draw

        pm = self._provide(cell, spec, mcfg, tcfg, key, batches, self.eval_config(cell), None, deadline, stopped_ok,
                           tokenizer=None, corpus=None)
        pm.task = task
        return pm

    def predict_memory(self, cell: Cell, train_cfg: TrainConfig | None = None) -> MemoryPrediction:
        """A lower bound on the peak memory of training ``cell`` here (``harness.provision.memory``), made on the
        real model and device at short lengths; remembered and attached to the cell's ``Provisioned``."""
        spec, mcfg, config = self.weights_config(cell, train_cfg)
        key = stable_hash(config)
        with self._lock:
            if key not in self._predictions:
                tcfg = self.train_config(cell, train_cfg)
                torch.manual_seed(0)
                self._predictions[key] = predict_training_memory(
                    lambda: spec.build(mcfg), mcfg.vocab_size, tcfg.seq_len, tcfg.batch_size, self.device,
                    autocast=tcfg.autocast, max_len=tcfg.seq_len, checkpoint=tcfg.grad_checkpoint)
            return self._predictions[key]

    def _provide(self, cell: Cell, spec: ModelSpec, mcfg: ModelConfig, tcfg: TrainConfig, key: str,
                 batches: Callable[[], BatchSource] | None, eval_cfg: EvalConfig,
                 progress: Callable[[int, float], None] | None, deadline: float | None, stopped_ok: bool,
                 callback: Callable[[int, nn.Module], dict | None] | None = None, **data: Any) -> Provisioned:
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                pristine, result, _ = hit
                module, source = copy.deepcopy(pristine), "memo"
            else:
                if spec.pretrained is not None:
                    module, result, source = self._load_pretrained(spec), TrainResult(0, 0), "pretrained"
                else:
                    source_of_batches = batches() if batches is not None else None  # None: the dataset's windows
                    module, result, source = self._load_or_train(cell, spec, mcfg, tcfg, key, progress,
                                                                  source_of_batches, deadline, callback)
                if result.stop != "timeout":  # a run cut short by its clock says nothing about the next caller's
                    self._memo[key] = (copy.deepcopy(module).cpu(), result, source)
            while len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
        if result.stop in ("oom", "timeout") and not stopped_ok:
            raise TrainingStopped(result, f"{cell.model} (seed {cell.seed}, L={tcfg.seq_len})")
        module.to(self.device).eval()
        return Provisioned(
            cell=cell, module=module, spec=spec, model_cfg=mcfg, train_cfg=tcfg, eval_cfg=eval_cfg, train=result,
            weights_key=key, source=source, data=self.data, device=self.device, params=count_parameters(module),
            deadline=deadline, memory_prediction=self._predictions.get(key), cache_note=self._uncached.get(key),
            **data,
        )

    def _build(self, cell: Cell, spec: ModelSpec, mcfg: ModelConfig, key: str) -> nn.Module:
        """Build the cell's model (seeded) and, once per weights key, check its output contract on a tiny batch —
        before any training, without touching the random state training will use."""
        torch.manual_seed(cell.seed or 0)
        module = build_checked(spec, mcfg, cell.model)
        if key not in self._checked:
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                check_output_contract(module.to(self.device), mcfg.vocab_size, mcfg.max_seq_len, cell.model or spec.name,
                                      self.device)
            self._checked.add(key)
        return module

    @staticmethod
    def _load_pretrained(spec: ModelSpec) -> nn.Module:
        from harness.models.pretrained import load_pretrained

        return load_pretrained(spec.pretrained).model

    def _load_or_train(self, cell: Cell, spec: ModelSpec, mcfg: ModelConfig, tcfg: TrainConfig, key: str,
                       progress: Callable[[int, float], None] | None, batches: BatchSource | None = None,
                       deadline: float | None = None,
                       callback: Callable[[int, nn.Module], dict | None] | None = None,
                       ) -> tuple[nn.Module, TrainResult, str]:
        module = self._build(cell, spec, mcfg, key)
        with self.cache.lock(key) as no_lock:
            result = self.cache.load(module, key)
            if result is not None:
                return module, result, "cache"
            if batches is None:  # the dataset's windows: the split must be long enough for one
                self.data.check_length(cell.dataset, "train", tcfg.seq_len + 2,
                                       f"training at seq_len {tcfg.seq_len}", cell.tokenizer)
            result = self._train(module, cell, tcfg, progress, batches, deadline, callback)
            if result.stop is None:  # only complete runs are cached (never diverged, out-of-memory or cut short)
                try:
                    self.cache.save(module, result, key)
                except OSError as exc:  # a read-only or full cache: keep the trained model, say it is not cached
                    self._uncached[key] = (f"trained weights not cached ({self.cache.dir}: {exc.strerror or exc}); "
                                           f"the next run trains again")
                    if no_lock:
                        self._uncached[key] += f"; no cache lock either ({no_lock})"
        return module, result, "trained"

    def _train(self, module: nn.Module, cell: Cell, tcfg: TrainConfig,
               progress: Callable[[int, float], None] | None, batches: BatchSource | None = None,
               deadline: float | None = None,
               callback: Callable[[int, nn.Module], dict | None] | None = None) -> TrainResult:
        from tqdm.auto import tqdm

        # tqdm disables itself when stderr is not a terminal (pytest's capture): `pytest -s` shows the bar.
        what = cell.dataset or dict(cell.params).get("task", "its task")
        desc = f"train {cell.model} on {what} (seed {cell.seed}, L={tcfg.seq_len})"
        with tqdm(total=tcfg.steps, desc=desc, unit="step", leave=False, disable=None) as bar:

            def tick(step: int, loss: float) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                if progress is not None:
                    progress(step, loss)

            ids = self.data.ids(cell.dataset, "train", cell.tokenizer) if batches is None else None
            return train(module, ids, tcfg, cell.seed or 0, self.device, tick, callback, batches=batches,
                         deadline=deadline)
