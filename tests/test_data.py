"""Dataset registry and loaders (real files from ../shared/data, overridable by LMBENCH_DATA_DIR)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from harness.data import (
    DATASETS,
    SPLITS,
    DataContext,
    DatasetSpec,
    DataUnavailable,
    UnknownNameError,
    dataset_availability,
    default_dataset_names,
    get_dataset_spec,
    load_corpus,
    split_by_chars,
    validate_dataset_names,
)
from harness.data.cache import hub_mode
from tests.helpers import DATA_DIR


def needs(*parts: str):
    path = DATA_DIR.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"real data not found: {path} (set LMBENCH_DATA_DIR)")


# ---- registry ------------------------------------------------------------------------------------------------
def test_builtin_names_registered():
    names = DATASETS.names()
    for n in ("synthetic-markov", "wikitext-2", "wikitext-2-raw", "wikitext-103", "ptb", "tinyshakespeare", "c4",
              "pile", "text:PATH", "synthetic-markov-o<K>"):
        assert n in names
    assert default_dataset_names() == ["synthetic-markov"]
    spec = DATASETS.get("wikitext-2")
    assert isinstance(spec, DatasetSpec) and spec.word_level and not spec.embedded
    assert DATASETS.get("synthetic-markov").embedded
    assert not DATASETS.get("tinyshakespeare").word_level


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnknownNameError) as exc:
        validate_dataset_names(["wikitext-2", "no-such-set", "text:/anywhere"])
    msg = str(exc.value)
    assert "no-such-set" in msg and "text:/anywhere" not in msg
    for n in ("synthetic-markov", "wikitext-2", "tinyshakespeare", "text:PATH"):
        assert n in msg
    with pytest.raises(UnknownNameError):
        load_corpus("wikitxt-2", DataContext(None, Path("/nonexistent")))
    assert "synthetic-markov-o9" not in DATASETS
    assert "synthetic-markov-o2" in DATASETS
    assert "text:" not in DATASETS


def test_text_names_resolve_without_touching_disk():
    spec = DATASETS.get("text:/some/path")
    assert isinstance(spec, DatasetSpec) and spec.name == "text:/some/path"
    assert "text:/some/path" in DATASETS
    assert validate_dataset_names(["text:/some/path", "synthetic-markov"]) == ["text:/some/path", "synthetic-markov"]
    assert get_dataset_spec("text:/some/path").word_level


def test_import_string_loader(ctx):
    spec = get_dataset_spec("harness.data.corpora:_tinyshakespeare")
    assert isinstance(spec, DatasetSpec) and callable(spec.load)


# ---- missing data ------------------------------------------------------------------------------------------------
def test_missing_data_message_names_folder_and_files(tmp_path):
    c = DataContext(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(DataUnavailable) as exc:
        load_corpus("wikitext-2", c)
    msg = str(exc.value)
    assert str(tmp_path / "wikitext-2-v1-tokenized") in msg
    for f in ("train.txt", "valid.txt", "test.txt"):
        assert f in msg
    assert "LMBENCH_DATA_DIR" in msg and "--hub" in msg
    assert dataset_availability("wikitext-2", c) == msg
    assert "\n" not in msg
    for name, needle in (("ptb", "ptb.train.txt"), ("wikitext-103", "wiki.train.tokens"), ("c4", "train.jsonl"),
                         ("tinyshakespeare", "input.txt"), ("pile", "valid.txt")):
        reason = dataset_availability(name, c)
        assert reason is not None and needle in reason and str(tmp_path) in reason
    assert "no Hub" in dataset_availability("tinyshakespeare", c)
    # no data dir at all
    none = DataContext(data_dir=None, cache_dir=tmp_path / "cache")
    assert "<data_dir>/wikitext-2-v1-tokenized" in dataset_availability("wikitext-2", none)
    # with --hub the check passes (nothing is downloaded by the check itself)
    assert dataset_availability("wikitext-2", DataContext(tmp_path, tmp_path / "c", allow_hub=True)) is None
    assert dataset_availability("tinyshakespeare", DataContext(tmp_path, tmp_path / "c", allow_hub=True)) is not None
    assert dataset_availability("synthetic-markov", none) is None


@needs("wikitext-2-raw-v1", "wiki.test.raw")
def test_wikitext2_raw_without_its_train_split_is_eval_only(ctx, tmp_path):
    """The shared copy has test and valid only: it loads (for pretrained models) and says what is missing."""
    corpus = load_corpus("wikitext-2-raw", ctx)
    assert corpus.meta["missing_splits"] == ["train"] and corpus.splits["train"] == ""
    assert corpus.splits["test"] == (DATA_DIR / "wikitext-2-raw-v1" / "wiki.test.raw").read_text(encoding="utf-8")
    assert dataset_availability("wikitext-2-raw", ctx) is None
    # without the test split it is unavailable, and the message names what is missing
    (tmp_path / "wikitext-2-raw-v1").mkdir()
    (tmp_path / "wikitext-2-raw-v1" / "wiki.valid.raw").write_text(" x \n")
    msg = dataset_availability("wikitext-2-raw", DataContext(tmp_path, tmp_path / "c"))
    assert "wiki.test.raw" in msg and "wiki.train.raw" not in msg.split("(expected")[0]


# ---- real corpora ---------------------------------------------------------------------------------------------------
def test_wikitext2_splits_equal_the_files(wikitext2):
    folder = DATA_DIR / "wikitext-2-v1-tokenized"
    for split in SPLITS:
        assert wikitext2.splits[split].encode("utf-8") == (folder / f"{split}.txt").read_bytes()
    assert wikitext2.word_level and wikitext2.source == str(folder)
    assert wikitext2.n_bytes("test") == 1_256_449


def test_wikitext2_word_counts(wikitext2):
    assert wikitext2.n_words("test") == 245_569
    assert wikitext2.n_words("valid") == 217_646
    assert wikitext2.n_words("train") == 2_088_628


def test_wikitext2_warm_load_is_fast(wikitext2, ctx):
    t0 = time.perf_counter()
    again = load_corpus("wikitext-2", ctx)  # the module fixture already built the datasets cache
    assert time.perf_counter() - t0 < 5.0
    assert again.splits["valid"] == wikitext2.splits["valid"]
    assert (Path(ctx.cache_dir) / "hf-datasets").is_dir()


def test_loading_keeps_the_hub_off(ctx, monkeypatch):
    import datasets.config as dcfg
    import huggingface_hub.constants as hcfg

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    before = (dcfg.HF_HUB_OFFLINE, hcfg.HF_HUB_OFFLINE)
    with hub_mode(False):
        assert dcfg.HF_HUB_OFFLINE and hcfg.HF_HUB_OFFLINE and os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert (dcfg.HF_HUB_OFFLINE, hcfg.HF_HUB_OFFLINE) == before
    assert "HF_DATASETS_OFFLINE" not in os.environ


def test_wikitext2_alternative_layout(tmp_path):
    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    texts = {s: f" = {s} = \n \n a b <unk> c \n" for s in SPLITS}
    for s, t in texts.items():
        (folder / f"wiki.{s}.tokens").write_text(t, encoding="utf-8")
    c = load_corpus("wikitext-2", DataContext(tmp_path, tmp_path / "cache"))
    assert c.splits == texts and c.n_words("test") == (3 + 1) + (0 + 1) + (4 + 1)


@needs("tinyshakespeare", "input.txt")
def test_tinyshakespeare_split_sizes(ctx):
    c = load_corpus("tinyshakespeare", ctx)
    assert {s: len(c.splits[s]) for s in SPLITS} == {"train": 1_003_854, "valid": 55_770, "test": 55_770}
    text = (DATA_DIR / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    assert "".join(c.splits[s] for s in SPLITS) == text
    assert c.n_words("test") is None and not c.word_level
    assert split_by_chars("abcdefghijklmnopqrst") == {"train": "abcdefghijklmnopqr", "valid": "s", "test": "t"}


def test_text_folder(tmp_path):
    folder = tmp_path / "my corpus"
    folder.mkdir()
    texts = {"train": "hello world\nfoo bar baz\n", "valid": "héllo\n\n", "test": "x y"}
    (folder / "train.txt").write_text(texts["train"], encoding="utf-8")
    (folder / "validation.txt").write_text(texts["valid"], encoding="utf-8")  # the alternative name
    c = DataContext(None, tmp_path / "cache")
    name = f"text:{folder}"
    reason = dataset_availability(name, c)
    assert reason is not None and "test.txt" in reason and str(folder) in reason
    with pytest.raises(DataUnavailable):
        load_corpus(name, c)
    (folder / "test.txt").write_text(texts["test"], encoding="utf-8")
    assert dataset_availability(name, c) is None
    corpus = load_corpus(name, c)
    assert corpus.splits == texts and corpus.name == name and corpus.word_level
    assert corpus.n_words("train") == 7 and corpus.n_words("test") == 3


def test_c4_local_jsonl_and_txt(tmp_path):
    folder = tmp_path / "c4"
    folder.mkdir()
    for s in SPLITS:
        with open(folder / f"{s}.jsonl", "w", encoding="utf-8") as f:
            for d in (f"{s} doc one\nline two", f"{s} doc two"):
                f.write(json.dumps({"text": d, "url": "x"}) + "\n")
    c = load_corpus("c4", DataContext(tmp_path, tmp_path / "cache"))
    assert c.splits["test"] == "test doc one\nline two\n\ntest doc two\n" and c.source == str(folder)
    pile = tmp_path / "pile"
    pile.mkdir()
    for s in ("train", "validation", "test"):
        (pile / f"{s}.txt").write_text(f"{s} text\n", encoding="utf-8")
    p = load_corpus("pile", DataContext(tmp_path, tmp_path / "cache"))
    assert p.splits["valid"] == "validation text\n" and not p.word_level


def test_synthetic_dataset_entry(tmp_path):
    c = load_corpus("synthetic-markov", DataContext(None, tmp_path))
    assert c.source == "embedded" and c.entropy_rate_bits is not None
    assert {s: len(c.splits[s]) for s in SPLITS} == {"train": 2_000_000, "valid": 100_000, "test": 100_000}
    assert c.meta["floor_ppl"] == pytest.approx(2 ** c.entropy_rate_bits)
    o2 = load_corpus("synthetic-markov-o2", DataContext(None, tmp_path))
    assert o2.name == "synthetic-markov-o2" and o2.meta["order"] == 2
    assert o2.entropy_rate_bits != c.entropy_rate_bits


def test_text_folder_empty_split_and_crlf(tmp_path):
    (tmp_path / "train.txt").write_bytes(b"a b\r\nc\r\n")  # CRLF comes back as LF (universal newlines)
    (tmp_path / "valid.txt").write_bytes(b"")  # datasets rejects empty files: loaded as an empty split
    (tmp_path / "test.txt").write_bytes(b"x")
    c = load_corpus(f"text:{tmp_path}", DataContext(None, tmp_path / "cache"))
    assert c.splits == {"train": "a b\nc\n", "valid": "", "test": "x"}
