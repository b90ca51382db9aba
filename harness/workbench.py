"""The workbench: corpora, tokenizers, encoded splits and trained models, each built once per process.

Benchmarks ask it for "model M trained on dataset D with seed S under the session's budget"; it loads the corpus,
tokenizes, and either loads cached weights (keyed by a hash of the *full* config) or trains with the one shared
loop. Every benchmark of a session, and later sessions, reuse the same trained weights.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.config import TrainConfig, stable_hash
from harness.data import build_tokenizer, encode_split, load_corpus
from harness.data.base import Corpus, DataContext, Tokenizer
from harness.models import ModelConfig, ModelSpec, count_parameters, get_model_spec
from harness.training import TrainResult, load_cached, save_cached, train

# Bump when the training loop or model builders change in a way that invalidates cached weights.
TRAIN_CODE_VERSION = 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was given but CUDA is not available; use --device cpu or auto")
    return torch.device(name)


@dataclass
class TrainedModel:
    model_name: str
    spec: ModelSpec
    module: nn.Module
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    result: TrainResult
    config_hash: str
    config: dict[str, Any]
    tokenizer: Tokenizer
    corpus: Corpus
    params: dict[str, int] = field(default_factory=dict)


class Workbench:
    def __init__(self, ctx: DataContext, train_cfg: TrainConfig, budget: str, tokenizer: str, device: str) -> None:
        self.ctx = ctx
        self.train_cfg = train_cfg
        self.budget = budget
        self.tokenizer_name = tokenizer
        self.device = resolve_device(device)
        self._corpora: dict[str, Corpus] = {}
        self._tokenizers: dict[str, Tokenizer] = {}
        self._ids: dict[tuple[str, str], np.ndarray] = {}
        self._models: dict[str, TrainedModel] = {}
        self._fingerprints: dict[str, str] = {}
        self._lock = threading.RLock()

    # -- data
    def corpus(self, dataset: str) -> Corpus:
        with self._lock:
            if dataset not in self._corpora:
                self._corpora[dataset] = load_corpus(dataset, self.ctx)
            return self._corpora[dataset]

    def tokenizer(self, dataset: str) -> Tokenizer:
        with self._lock:
            if dataset not in self._tokenizers:
                self._tokenizers[dataset] = build_tokenizer(self.tokenizer_name, self.corpus(dataset), self.ctx)
            return self._tokenizers[dataset]

    def ids(self, dataset: str, split: str) -> np.ndarray:
        with self._lock:
            key = (dataset, split)
            if key not in self._ids:
                self._ids[key] = encode_split(self.tokenizer(dataset), self.corpus(dataset), split, self.ctx)
            return self._ids[key]

    def fingerprint(self, dataset: str) -> str:
        """Content hash of the corpus and tokenizer: cached weights never outlive a change of data."""
        with self._lock:
            if dataset not in self._fingerprints:
                corpus, tok = self.corpus(dataset), self.tokenizer(dataset)
                h = hashlib.sha256()
                for split in ("train", "valid", "test"):
                    h.update(corpus.splits.get(split, "").encode("utf-8", "surrogatepass"))
                h.update(f"{tok.name}:{tok.vocab_size}".encode())
                self._fingerprints[dataset] = h.hexdigest()[:16]
            return self._fingerprints[dataset]

    # -- models
    def run_config(self, model_name: str, dataset: str, seed: int) -> tuple[ModelSpec, ModelConfig, dict[str, Any]]:
        spec = get_model_spec(model_name)
        tok = self.tokenizer(dataset)
        mcfg = spec.config(tok.vocab_size, self.train_cfg.seq_len, self.budget)
        config = {
            "model": model_name,
            "family": spec.family,
            "preset": mcfg.preset,
            "vocab_size": mcfg.vocab_size,
            "max_seq_len": mcfg.max_seq_len,
            "dataset": dataset,
            "tokenizer": tok.name,
            "data_fingerprint": self.fingerprint(dataset),
            "seed": seed,
            "budget": self.budget,
            "train": self.train_cfg.to_dict(),
            "train_code_version": TRAIN_CODE_VERSION,
            "device_type": self.device.type,
        }
        return spec, mcfg, config

    def _train(self, module: nn.Module, model_name: str, dataset: str, seed: int, progress=None) -> TrainResult:
        with _progress_bar(self.train_cfg.steps, f"train {model_name} on {dataset} (seed {seed})") as bar:

            def tick(step: int, loss: float) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                if progress is not None:
                    progress(step, loss)

            return train(module, self.ids(dataset, "train"), self.train_cfg, seed, self.device, tick)

    def trained(self, model_name: str, dataset: str, seed: int, progress=None) -> TrainedModel:
        spec, mcfg, config = self.run_config(model_name, dataset, seed)
        key = stable_hash(config)
        with self._lock:
            if key in self._models:
                return self._models[key]
        torch.manual_seed(seed)
        module = spec.build(mcfg)
        result = load_cached(module, self.ctx.cache_dir, key)
        if result is None:
            result = self._train(module, model_name, dataset, seed, progress)
            if not result.diverged:
                save_cached(module, result, self.ctx.cache_dir, key)
        module.to(self.device).eval()
        tm = TrainedModel(
            model_name=model_name,
            spec=spec,
            module=module,
            model_cfg=mcfg,
            train_cfg=self.train_cfg,
            result=result,
            config_hash=key,
            config=config,
            tokenizer=self.tokenizer(dataset),
            corpus=self.corpus(dataset),
            params=count_parameters(module),
        )
        with self._lock:
            self._models[key] = tm
        return tm


def _progress_bar(total: int, desc: str):
    """A tqdm bar on stderr; tqdm disables itself when stderr is not a terminal (e.g. under pytest's capture:
    run ``pytest -s`` to see it)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)
