"""What a dataset and a tokenizer are, for every benchmark.

A dataset resolves to a ``Corpus``: three text splits plus the facts the metrics need (are "words" defined?
is the entropy-rate floor known?). A tokenizer turns a split into int64 ids. Keeping text as the common
currency lets every tokenizer (byte, word, BPE, GPT-2) run on every corpus, and bits-per-byte is comparable
across tokenizers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

SPLITS = ("train", "valid", "test")


class DataUnavailable(RuntimeError):
    """Raised when a dataset's files are missing and the Hub is not allowed. The message names the folder and
    the files expected, so it can be shown to the user as is (a skip reason, or an error if named explicitly)."""


@dataclass
class Corpus:
    name: str
    splits: dict[str, str]  # "train" | "valid" | "test" -> full text of the split
    source: str  # a local path, "hub:<id>" or "embedded"
    word_level: bool = False  # words = whitespace tokens + one <eos> per line (WikiText/PTB convention)
    entropy_rate_bits: float | None = None  # per character (synthetic sources only): the exact floor
    meta: dict = field(default_factory=dict)

    def n_words(self, split: str) -> int | None:
        """Words of a split in the classic convention (whitespace tokens + one end-of-line per line)."""
        if not self.word_level:
            return None
        text = self.splits[split]
        return sum(len(line.split()) + 1 for line in text.splitlines())

    def n_bytes(self, split: str) -> int:
        return len(self.splits[split].encode("utf-8"))


@runtime_checkable
class Tokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> np.ndarray:  # int64 ids
        ...

    def decode(self, ids: np.ndarray | list[int]) -> str:
        ...


@dataclass(frozen=True)
class DataContext:
    """Where data lives and whether the Hub may be used (the only place network access is allowed)."""

    data_dir: Path | None
    cache_dir: Path
    allow_hub: bool = False
