"""Tokenizers: registry, round trips, the WikiText-2 word vocabulary, GPT-2 ids, BPE and encoding caches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness.data.tokenizers as tkmod
from harness.data import (
    TOKENIZERS,
    ByteTokenizer,
    Corpus,
    DataContext,
    DataUnavailable,
    Tokenizer,
    UnknownNameError,
    WordTokenizer,
    build_tokenizer,
    default_tokenizer_names,
    encode_split,
    encoded_cache_path,
    load_corpus,
    tokenizer_availability,
    validate_tokenizer_names,
)
from tests.helpers import DATA_DIR

GPT2_DIR = DATA_DIR / "gpt2-bpe"
needs_gpt2 = pytest.mark.skipif(not (GPT2_DIR / "encoder.json").is_file(),
                                reason=f"GPT-2 BPE files not found under {GPT2_DIR} (set LMBENCH_DATA_DIR)")


@pytest.fixture(scope="module")
def gpt2(ctx):
    if not (GPT2_DIR / "encoder.json").is_file():
        pytest.skip(f"GPT-2 BPE files not found under {GPT2_DIR}")
    return build_tokenizer("gpt2", Corpus("none", {"train": "", "valid": "", "test": ""}, "x"), ctx)


def small_corpus(name: str = "small") -> Corpus:
    train = "the cat sat on the mat\nthe dog sat\n\n a  b \n" * 50
    return Corpus(name, {"train": train, "valid": "the cat ate\n", "test": "a dog on a log\n"}, "embedded",
                  word_level=True)


# ---- registry ------------------------------------------------------------------------------------------------
def test_registry_names_and_errors():
    assert {"byte", "word", "gpt2", "bpe-<V>"} <= set(TOKENIZERS.names())
    assert default_tokenizer_names() == ["byte"]
    assert "bpe-512" in TOKENIZERS and "bpe-100" not in TOKENIZERS  # V must cover the 256 byte alphabet
    with pytest.raises(UnknownNameError) as exc:
        validate_tokenizer_names(["byte", "sentencepiece"])
    msg = str(exc.value)
    assert "sentencepiece" in msg and all(n in msg for n in ("byte", "word", "gpt2", "bpe-<V>"))
    with pytest.raises(UnknownNameError):
        build_tokenizer("wordpiece", small_corpus(), DataContext(None, Path("/nonexistent")))


def test_gpt2_missing_files_message(tmp_path):
    c = DataContext(tmp_path, tmp_path / "cache")
    reason = tokenizer_availability("gpt2", c)
    assert reason is not None and str(tmp_path / "gpt2-bpe") in reason
    assert "encoder.json" in reason and "vocab.bpe" in reason and "--hub" in reason
    with pytest.raises(DataUnavailable) as exc:
        build_tokenizer("gpt2", small_corpus(), c)
    assert str(exc.value) == reason
    assert tokenizer_availability("byte", c) is None


# ---- byte ------------------------------------------------------------------------------------------------------
@given(st.text())
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and len(ids) == len(text.encode("utf-8"))
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < 256)
    assert tok.decode(ids) == text
    assert isinstance(tok, Tokenizer)


# ---- word ------------------------------------------------------------------------------------------------------
def test_word_vocab_on_wikitext2(wikitext2, ctx):
    tok = build_tokenizer("word", wikitext2, ctx)
    assert isinstance(tok, WordTokenizer) and tok.vocab_size == 33_278
    ids = encode_split(tok, wikitext2, "test", ctx)
    assert ids.dtype == np.int64 and len(ids) == wikitext2.n_words("test") == 245_569
    assert (ids == tok.eos_id).sum() == 4_358
    assert np.array_equal(tok.encode(tok.decode(ids)), ids)
    assert tok.decode(tok.encode(" = Valkyria Chronicles III = \n")) == "= Valkyria Chronicles III =\n"


def test_word_unk_added_and_used():
    tok = WordTokenizer.from_text("b a b\nc\n")
    assert tok.itos == ["b", "a", "<eos>", "c", "<unk>"]  # order of first appearance, <unk> appended
    assert tok.encode("a zzz\n").tolist() == [1, 4, 2]
    assert tok.decode([1, 4, 2, 3]) == "a <unk>\nc"


# ---- gpt2 ------------------------------------------------------------------------------------------------------
@needs_gpt2
def test_gpt2_hello_world(gpt2):
    assert gpt2.encode("Hello world").tolist() == [15496, 995]
    assert gpt2.vocab_size == 50_257
    assert gpt2.decode([15496, 995]) == "Hello world"


@needs_gpt2
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())
def test_gpt2_round_trip(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)) == text


@needs_gpt2
def test_piecewise_encoding_equals_whole_text(gpt2):
    path = DATA_DIR / "wikitext-2-raw-v1" / "wiki.valid.raw"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    text = path.read_text(encoding="utf-8")[:400_000] + "end\n\n\n  \n x\n\ty"
    pieces = tkmod.safe_pieces(text)
    assert "".join(pieces) == text and len(pieces) > 100
    whole = np.asarray(gpt2.tok.encode(text).ids)
    batched = gpt2.encode(text)  # > 100k characters: the piecewise encode_batch path
    assert np.array_equal(whole, batched)
    assert gpt2.decode(batched) == text


@needs_gpt2
def test_encode_split_is_cached(wikitext2, gpt2, ctx, monkeypatch):
    path = encoded_cache_path(gpt2, wikitext2, "valid", ctx)
    assert path is not None and not path.exists()
    ids = encode_split(gpt2, wikitext2, "valid", ctx)
    assert path.is_file() and ids.dtype == np.int64
    monkeypatch.setattr(gpt2, "encode", lambda text: pytest.fail("encode_split re-encoded a cached split"))
    again = encode_split(gpt2, wikitext2, "valid", ctx)
    assert np.array_equal(ids, again) and again.dtype == np.int64
    # the key follows the text: a changed split gets another file
    changed = Corpus(wikitext2.name, dict(wikitext2.splits, valid=wikitext2.splits["valid"] + "x\n"), "x")
    assert encoded_cache_path(gpt2, changed, "valid", ctx) != path
    assert encoded_cache_path(ByteTokenizer(), wikitext2, "valid", ctx) is None  # bytes are never cached


# ---- bpe -------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not (DATA_DIR / "tinyshakespeare" / "input.txt").is_file(), reason="tinyshakespeare not found")
def test_bpe_train_cache_and_reuse(ctx, monkeypatch):
    corpus = load_corpus("tinyshakespeare", ctx)
    tok = build_tokenizer("bpe-400", corpus, ctx)
    assert tok.name == "bpe-400" and tok.vocab_size == 400
    cached = list((Path(ctx.cache_dir) / "tokenizers").glob("bpe-400.tinyshakespeare.*.json"))
    assert len(cached) == 1 and tok.source == str(cached[0])
    text = corpus.splits["test"]
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) < len(text.encode("utf-8"))
    # a fresh process (no in-memory memo) must load the JSON instead of training again
    monkeypatch.setattr(tkmod, "_BUILT", {})
    import tokenizers.trainers

    monkeypatch.setattr(tokenizers.trainers, "BpeTrainer", lambda **kw: pytest.fail("BPE was retrained"))
    again = build_tokenizer("bpe-400", corpus, ctx)
    assert again is not tok and np.array_equal(again.encode(text), ids)


def test_bpe_small_corpus_round_trip(tmp_path):
    ctx = DataContext(None, tmp_path)
    corpus = small_corpus("tiny-bpe")
    tok = build_tokenizer("bpe-300", corpus, ctx)
    assert 256 <= tok.vocab_size <= 300
    for s in ("train", "valid", "test"):
        assert tok.decode(encode_split(tok, corpus, s, ctx)) == corpus.splits[s]
    assert len(list((tmp_path / "encoded").glob("*.npy"))) == 3


@pytest.mark.parametrize("name", ["byte", "gpt2", "word"])
def test_token_byte_lengths_add_up_to_the_text(name):
    """bits per byte is normalised by the bytes of the scored tokens: the per-token lengths must be exact."""
    from harness.data import build_tokenizer, default_context, load_corpus, token_byte_lengths

    ctx = default_context(False)
    if ctx.data_dir is None:
        pytest.skip("no ../shared/data and no LMBENCH_DATA_DIR")
    corpus = load_corpus("wikitext-2", ctx)
    tok = build_tokenizer(name, corpus, ctx)
    text = corpus.splits["valid"][:20000]
    ids = tok.encode(text)
    total = int(token_byte_lengths(tok)[ids].sum())
    if name == "word":  # per-token lengths miss the "\n" of empty lines: within 0.5% on WikiText
        assert total == pytest.approx(len(tok.decode(ids).encode("utf-8")), rel=5e-3)
    else:
        assert total == len(text.encode("utf-8"))
