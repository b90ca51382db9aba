"""Corpora, tokenizers and encoded splits, each built once per process and shared by every cell.

Why a memo: a session measures many cells on the same dataset; loading and tokenizing WikiText once per process
(and once per machine, through the on-disk caches of ``harness.data``) keeps that cost out of every measurement.
"""
from __future__ import annotations

import hashlib
import threading

import numpy as np

from harness.data import build_tokenizer, encode_split, load_corpus, position_byte_lengths
from harness.data.base import Corpus, DataContext, Tokenizer


class DataStore:
    def __init__(self, ctx: DataContext, tokenizer: str) -> None:
        self.ctx = ctx
        self.tokenizer_name = tokenizer
        self._corpora: dict[str, Corpus] = {}
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}
        self._ids: dict[tuple[str, str, str], np.ndarray] = {}
        self._fingerprints: dict[tuple[str, str], str] = {}
        self._lock = threading.RLock()

    def corpus(self, dataset: str) -> Corpus:
        with self._lock:
            if dataset not in self._corpora:
                self._corpora[dataset] = load_corpus(dataset, self.ctx)
            return self._corpora[dataset]

    def tokenizer(self, dataset: str, name: str | None = None) -> Tokenizer:
        """The tokenizer ``name`` (default: the session's) for ``dataset`` (trained tokenizers learn from its train
        split)."""
        name = name or self.tokenizer_name
        with self._lock:
            key = (dataset, name)
            if key not in self._tokenizers:
                self._tokenizers[key] = build_tokenizer(name, self.corpus(dataset), self.ctx)
            return self._tokenizers[key]

    def ids(self, dataset: str, split: str, tokenizer: str | None = None) -> np.ndarray:
        name = tokenizer or self.tokenizer_name
        with self._lock:
            key = (dataset, split, name)
            if key not in self._ids:
                self._ids[key] = encode_split(self.tokenizer(dataset, name), self.corpus(dataset), split, self.ctx)
            return self._ids[key]

    def byte_lengths(self, dataset: str, split: str, tokenizer: str | None = None) -> np.ndarray:
        """Bytes of the split's text each token position covers (aligned with ``ids``; exact for every tokenizer)."""
        name = tokenizer or self.tokenizer_name
        with self._lock:
            key = ("bytes", dataset, split, name)
            if key not in self._ids:
                tok, text = self.tokenizer(dataset, name), self.corpus(dataset).splits[split]
                lengths = position_byte_lengths(tok, text)
                if len(lengths) != len(self.ids(dataset, split, name)):
                    raise AssertionError(f"byte lengths of {dataset}/{split} do not align with its {name} ids")
                self._ids[key] = lengths
            return self._ids[key]

    def fingerprint(self, dataset: str, tokenizer: str | None = None) -> str:
        """Content hash of the corpus and tokenizer: cached weights never outlive a change of data."""
        name = tokenizer or self.tokenizer_name
        with self._lock:
            if (dataset, name) not in self._fingerprints:
                corpus, tok = self.corpus(dataset), self.tokenizer(dataset, name)
                h = hashlib.sha256()
                for split in ("train", "valid", "test"):
                    h.update(corpus.splits.get(split, "").encode("utf-8", "surrogatepass"))
                h.update(f"{tok.name}:{tok.vocab_size}:{getattr(tok, 'fingerprint', '')}".encode())
                self._fingerprints[(dataset, name)] = h.hexdigest()[:16]
            return self._fingerprints[(dataset, name)]
