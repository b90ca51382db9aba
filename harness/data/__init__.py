"""Datasets and tokenizers: the ``DATASETS`` and ``TOKENIZERS`` registries and the functions benchmarks use.

    from harness.data import DataContext, load_corpus, build_tokenizer, encode_split
    ctx = DataContext(data_dir=Path("../shared/data"), cache_dir=Path(".lmbench-cache"))
    corpus = load_corpus("wikitext-2", ctx)          # DataUnavailable if the files are missing (and no --hub)
    tok = build_tokenizer("gpt2", corpus, ctx)
    ids = encode_split(tok, corpus, "test", ctx)     # int64, cached on disk

Add a dataset from your own code (or pass ``--datasets pkg.module:attr`` / ``text:PATH``)::

    from harness.data import DATASETS, DatasetSpec
    DATASETS.add("mine", DatasetSpec(name="mine", description="...", load=my_loader))

See docs/datasets.md for every name, where it looks on disk and the caching rules.
"""
from __future__ import annotations

from harness.data.base import SPLITS, Corpus, DataContext, DataUnavailable, Tokenizer
from harness.data.cache import default_cache_dir, default_context, default_data_dir
from harness.data.corpora import (
    DATASETS,
    DatasetRegistry,
    DatasetSpec,
    dataset_availability,
    default_dataset_names,
    get_dataset_spec,
    load_corpus,
    split_by_chars,
    text_folder_spec,
    validate_dataset_names,
)
from harness.data.synthetic import (
    ALPHABET,
    MarkovSource,
    empirical_conditional_entropy_bits,
    synthetic_corpus,
)
from harness.data.tokenizers import (
    TOKENIZERS,
    ByteTokenizer,
    HFTokenizer,
    TokenizerSpec,
    WordTokenizer,
    build_tokenizer,
    default_tokenizer_names,
    encode_split,
    encoded_cache_path,
    get_tokenizer_spec,
    position_byte_lengths,
    token_byte_lengths,
    tokenizer_availability,
    validate_tokenizer_names,
)
from harness.registry import UnknownNameError

__all__ = [
    "token_byte_lengths",
    "position_byte_lengths",
    "ALPHABET",
    "DATASETS",
    "SPLITS",
    "TOKENIZERS",
    "ByteTokenizer",
    "Corpus",
    "DataContext",
    "DataUnavailable",
    "DatasetRegistry",
    "DatasetSpec",
    "HFTokenizer",
    "MarkovSource",
    "Tokenizer",
    "TokenizerSpec",
    "UnknownNameError",
    "WordTokenizer",
    "build_tokenizer",
    "dataset_availability",
    "default_cache_dir",
    "default_context",
    "default_data_dir",
    "default_dataset_names",
    "default_tokenizer_names",
    "empirical_conditional_entropy_bits",
    "encode_split",
    "encoded_cache_path",
    "get_dataset_spec",
    "get_tokenizer_spec",
    "load_corpus",
    "split_by_chars",
    "synthetic_corpus",
    "text_folder_spec",
    "tokenizer_availability",
    "validate_dataset_names",
    "validate_tokenizer_names",
]
