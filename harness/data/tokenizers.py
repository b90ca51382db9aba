"""Tokenizers (the ``TOKENIZERS`` registry), ``build_tokenizer`` and the cached ``encode_split``.

* ``byte`` (default): UTF-8 bytes, vocab 256; lossless.
* ``word``: vocabulary from the train split in order of first appearance, whitespace-split words plus one
  ``<eos>`` per line (the PyTorch word_language_model convention), ``<unk>`` added if absent; unknown words map
  to ``<unk>``. Encoding a split gives exactly ``Corpus.n_words(split)`` ids. Decoding is lossy in whitespace
  (words are re-joined with single spaces, ``<eos>`` becomes a newline) but ``encode(decode(ids)) == ids``.
* ``bpe-<V>``: byte-level BPE (GPT-2 pre-tokenizer, ``tokenizers`` library) trained on the train split, target
  vocab V >= 256 (min frequency 2, so a small corpus can end below V: ``vocab_size`` is the real size). Cached as
  JSON under ``<cache_dir>/tokenizers/`` keyed by (corpus name, sha256 of the train text, V); reused when present.
* ``gpt2``: OpenAI's GPT-2 BPE from ``<data_dir>/gpt2-bpe/{encoder.json,vocab.bpe}`` (Hub ``gpt2`` with --hub).
  ``<|endoftext|>`` (id 50256) is an ordinary vocabulary entry: text containing that literal string is encoded
  as plain text (like tiktoken's ``encode_ordinary``).

Big texts are cut into pieces at line starts where the GPT-2 pre-tokenizer regex cannot join across the cut (a
line break followed by at most one whitespace character and then a non-space), and encoded with
``encode_batch``. The ids are identical to encoding the whole text at once (tested), only faster.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from harness.data.base import Corpus, DataContext, DataUnavailable, Tokenizer
from harness.data.cache import atomic_save_npy, atomic_write_bytes, safe_name, short_hash, split_hash
from harness.registry import Registry, UnknownNameError

EOS = "<eos>"
UNK = "<unk>"
GPT2_FILES = ("encoder.json", "vocab.bpe")
GPT2_DIR = "gpt2-bpe"
BPE_MIN_VOCAB = 256
BPE_MAX_VOCAB = 1_000_000
_BATCH_PIECES = 20_000  # pieces per encode_batch call (bounds the memory of Encoding objects)
_SAFE_CUT = re.compile(r"(?<=\n)(?= ?\S)")  # exact for the GPT-2 / ByteLevel pre-tokenizer (see module doc)


def safe_pieces(text: str) -> list[str]:
    """Cut ``text`` at line starts where byte-level BPE tokenization is unaffected by the cut."""
    return _SAFE_CUT.split(text)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer implementations
# ---------------------------------------------------------------------------------------------------------------
class ByteTokenizer:
    name = "byte"
    vocab_size = 256
    fingerprint = "utf-8-bytes-v1"

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


class WordTokenizer:
    """Word-level vocabulary (PyTorch word_language_model convention)."""

    def __init__(self, itos: Sequence[str], name: str = "word") -> None:
        self.name = name
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate words in the vocabulary")
        for special in (EOS, UNK):
            if special not in self.stoi:
                raise ValueError(f"the vocabulary must contain {special}")
        self.eos_id = self.stoi[EOS]
        self.unk_id = self.stoi[UNK]
        self.vocab_size = len(self.itos)
        self.fingerprint = short_hash("word-v1", "\n".join(self.itos), n=32)

    @classmethod
    def from_text(cls, train_text: str, name: str = "word") -> "WordTokenizer":
        seen: dict[str, None] = {}
        for line in train_text.splitlines():
            for w in line.split():
                seen.setdefault(w, None)
            seen.setdefault(EOS, None)
        seen.setdefault(EOS, None)
        seen.setdefault(UNK, None)
        return cls(list(seen), name=name)

    def encode(self, text: str) -> np.ndarray:
        get, unk, eos = self.stoi.get, self.unk_id, self.eos_id
        ids: list[int] = []
        for line in text.splitlines():
            ids.extend([get(w, unk) for w in line.split()])
            ids.append(eos)
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        out, cur = [], []
        itos, eos = self.itos, self.eos_id
        for i in np.asarray(ids, dtype=np.int64).tolist():
            if i == eos:
                out.append(" ".join(cur) + "\n")
                cur = []
            else:
                cur.append(itos[i])
        if cur:
            out.append(" ".join(cur))
        return "".join(out)

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"


class HFTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer`` behind the lmbench ``Tokenizer`` protocol."""

    def __init__(self, tok, name: str, *, source: str = "") -> None:
        self.tok = tok
        self.name = name
        self.source = source
        self.vocab_size = int(tok.get_vocab_size(with_added_tokens=True))
        self.fingerprint = short_hash("hf-tokenizers", tok.to_str(), n=32)
        self._batch = getattr(tok, "encode_batch_fast", None) or tok.encode_batch

    def encode(self, text: str) -> np.ndarray:
        if len(text) < 100_000:
            return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        pieces = safe_pieces(text)
        chunks = []
        for i in range(0, len(pieces), _BATCH_PIECES):
            encs = self._batch(pieces[i : i + _BATCH_PIECES], add_special_tokens=False)
            chunks.append(np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64))
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return self.tok.decode(np.asarray(ids, dtype=np.int64).tolist(), skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"HFTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, source={self.source!r})"


def _byte_level_bpe(model):
    from tokenizers import Tokenizer, decoders, pre_tokenizers

    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(corpus: Corpus, vocab: int, ctx: DataContext) -> HFTokenizer:
    """Byte-level BPE on ``corpus``'s train split, cached under ``<cache_dir>/tokenizers/`` (see module doc)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    name = f"bpe-{vocab}"
    key = short_hash("bytelevel-bpe-v1", corpus.name, split_hash(corpus, "train"), vocab)
    path = Path(ctx.cache_dir) / "tokenizers" / f"{name}.{safe_name(corpus.name)}.{key}.json"
    if path.is_file():
        try:
            return HFTokenizer(Tokenizer.from_file(str(path)), name, source=str(path))
        except Exception:  # a corrupt cache entry: retrain and overwrite
            pass
    tok = _byte_level_bpe(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    pieces = safe_pieces(corpus.splits["train"])
    tok.train_from_iterator(pieces, trainer=trainer, length=len(pieces))
    atomic_write_bytes(path, tok.to_str().encode("utf-8"))
    return HFTokenizer(tok, name, source=str(path))


def gpt2_files(ctx: DataContext) -> tuple[Path, Path] | None:
    if ctx.data_dir is None:
        return None
    folder = Path(ctx.data_dir) / GPT2_DIR
    paths = tuple(folder / f for f in GPT2_FILES)
    return paths if all(p.is_file() for p in paths) else None  # type: ignore[return-value]


def _gpt2_reason(ctx: DataContext) -> str:
    if ctx.data_dir is not None:
        where = str(Path(ctx.data_dir) / GPT2_DIR)
    else:
        where = f"<data_dir>/{GPT2_DIR} (no data directory set)"
    return (f"gpt2: no tokenizer files under {where} (expected {', '.join(GPT2_FILES)}); "
            f"set --data-dir/LMBENCH_DATA_DIR or pass --hub")


def load_gpt2(ctx: DataContext) -> HFTokenizer:
    from tokenizers import Tokenizer, models

    files = gpt2_files(ctx)
    if files is not None:
        model = models.BPE.from_file(str(files[0]), str(files[1]))
        return HFTokenizer(_byte_level_bpe(model), "gpt2", source=str(files[0].parent))
    if not ctx.allow_hub:
        raise DataUnavailable(_gpt2_reason(ctx))
    from harness.data.cache import hub_mode

    try:
        with hub_mode(True):
            tok = Tokenizer.from_pretrained("gpt2")
    except Exception as exc:
        local = _gpt2_reason(ctx).split("; set --data-dir")[0]
        detail = " ".join(str(exc).split())[:300]
        raise DataUnavailable(f"{local}; the Hub fallback gpt2 failed ({type(exc).__name__}: {detail}); "
                              f"set --data-dir/LMBENCH_DATA_DIR or check the network") from exc
    return HFTokenizer(tok, "gpt2", source="hub:gpt2")


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class TokenizerSpec:
    name: str
    description: str
    build: Callable[[Corpus, DataContext], Tokenizer]
    trained: bool = False  # the vocabulary is learned from the corpus' train split
    default: bool = False
    check: Callable[[DataContext], str | None] | None = field(default=None, repr=False)

    def availability(self, ctx: DataContext) -> str | None:
        return self.check(ctx) if self.check is not None else None


class TokenizerRegistry(Registry[TokenizerSpec]):
    """``Registry`` plus ``hf:PATH`` names: the own tokenizer of a local Hugging Face checkpoint."""

    HF_TEMPLATE = "hf:PATH"

    def get(self, name: str) -> TokenizerSpec:
        if name.startswith("hf:"):
            return _checkpoint_spec(name)
        return super().get(name)

    def names(self) -> list[str]:
        return super().names() + [self.HF_TEMPLATE]


def _checkpoint_spec(name: str) -> TokenizerSpec:
    from harness.data.checkpoint import checkpoint_reason, load_checkpoint_tokenizer, parse_hf_name

    path = parse_hf_name(name)
    if path is None:
        raise UnknownNameError(f"tokenizer {name!r}: give a folder after 'hf:' (hf:PATH)")
    return TokenizerSpec(name, f"the own tokenizer of the checkpoint at {path}",
                         lambda corpus, ctx: load_checkpoint_tokenizer(path), check=lambda ctx: checkpoint_reason(path))


TOKENIZERS: TokenizerRegistry = TokenizerRegistry("tokenizer")

TOKENIZERS.add("byte", TokenizerSpec("byte", "UTF-8 bytes, vocab 256", lambda corpus, ctx: ByteTokenizer(),
                                     default=True))
TOKENIZERS.add("word", TokenizerSpec(
    "word", "whitespace words + <eos> per line, vocabulary from the train split, <unk> for the rest",
    lambda corpus, ctx: WordTokenizer.from_text(corpus.splits["train"]), trained=True,
))
TOKENIZERS.add("gpt2", TokenizerSpec(
    "gpt2", f"GPT-2 byte-level BPE (50,257) from <data_dir>/{GPT2_DIR}/ or the Hub (--hub)",
    lambda corpus, ctx: load_gpt2(ctx),
    check=lambda ctx: None if gpt2_files(ctx) is not None or ctx.allow_hub else _gpt2_reason(ctx),
))


def _bpe_spec(V: str) -> TokenizerSpec:
    vocab = int(V)
    if not BPE_MIN_VOCAB <= vocab <= BPE_MAX_VOCAB:
        raise UnknownNameError(f"tokenizer 'bpe-{V}': V must be between {BPE_MIN_VOCAB} (the byte alphabet) "
                               f"and {BPE_MAX_VOCAB:,}")
    return TokenizerSpec(f"bpe-{vocab}", f"byte-level BPE, vocab {vocab}, trained on the train split",
                         lambda corpus, ctx: train_bpe(corpus, vocab, ctx), trained=True)


TOKENIZERS.add_pattern("bpe-<V>", _bpe_spec)


def get_tokenizer_spec(name: str) -> TokenizerSpec:
    entry = TOKENIZERS.get(name)
    if isinstance(entry, TokenizerSpec):
        return entry
    if not isinstance(entry, type) and isinstance(entry, Tokenizer):
        inst = entry
        return TokenizerSpec(name, "user tokenizer instance (import string)", lambda corpus, ctx: inst)
    if callable(entry):
        return TokenizerSpec(name, "user tokenizer factory (import string)", entry)
    raise UnknownNameError(f"tokenizer {name!r} is neither a TokenizerSpec, a Tokenizer nor a factory")


def validate_tokenizer_names(names: Iterable[str]) -> list[str]:
    return TOKENIZERS.validate(names)


def tokenizer_availability(name: str, ctx: DataContext) -> str | None:
    """None if the tokenizer can be built in ``ctx``, else the one-line reason (``gpt2`` without its files)."""
    return get_tokenizer_spec(name).availability(ctx)


def default_tokenizer_names() -> list[str]:
    return [n for n, spec in TOKENIZERS.entries().items() if spec.default]


_BUILT: dict[tuple, Tokenizer] = {}


def build_tokenizer(name: str, corpus: Corpus, ctx: DataContext) -> Tokenizer:
    """Build (or reuse, within this process) the tokenizer ``name`` for ``corpus``."""
    spec = get_tokenizer_spec(name)
    trained_on = (corpus.name, split_hash(corpus, "train")) if spec.trained else None
    key = (name, trained_on, str(ctx.data_dir), str(ctx.cache_dir), ctx.allow_hub)
    tok = _BUILT.get(key)
    if tok is None:
        tok = spec.build(corpus, ctx)
        if not isinstance(tok, Tokenizer):
            raise TypeError(f"tokenizer {name!r} built {type(tok).__name__}, which lacks name/vocab_size/encode/decode")
        if len(_BUILT) > 32:
            _BUILT.clear()
        _BUILT[key] = tok
    return tok


# ---------------------------------------------------------------------------------------------------------------
# Encoding with an on-disk cache
# ---------------------------------------------------------------------------------------------------------------
def _disk_dtype(vocab_size: int) -> type:
    if vocab_size <= 1 << 8:
        return np.uint8
    if vocab_size <= 1 << 16:
        return np.uint16
    return np.int32 if vocab_size < 1 << 31 else np.int64


def encoded_cache_path(tokenizer: Tokenizer, corpus: Corpus, split: str, ctx: DataContext) -> Path | None:
    """Where ``encode_split`` caches these ids (None for tokenizers without a ``fingerprint`` or for ``byte``)."""
    fp = getattr(tokenizer, "fingerprint", None)
    if fp is None or isinstance(tokenizer, ByteTokenizer):
        return None
    key = short_hash("encoded-v1", tokenizer.name, fp, corpus.name, split, split_hash(corpus, split), n=20)
    fname = f"{safe_name(corpus.name)}.{split}.{safe_name(tokenizer.name)}.{key}.npy"
    return Path(ctx.cache_dir) / "encoded" / fname


def encode_split(tokenizer: Tokenizer, corpus: Corpus, split: str, ctx: DataContext) -> np.ndarray:
    """int64 ids of ``corpus.splits[split]``, cached as .npy under ``<cache_dir>/encoded/`` keyed by (tokenizer
    name + vocabulary fingerprint, corpus name, split, sha256 of the split text). Tokenizers without a
    ``fingerprint`` attribute (user tokenizers) are not cached; ``byte`` is not cached (it is a memcpy)."""
    text = corpus.splits[split]
    path = encoded_cache_path(tokenizer, corpus, split, ctx)
    if path is not None and path.is_file():
        try:
            return np.load(path, allow_pickle=False).astype(np.int64)
        except Exception:  # corrupt or partial: re-encode
            pass
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    if path is not None:
        atomic_save_npy(path, ids.astype(_disk_dtype(int(tokenizer.vocab_size))))
    return ids


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each token id stands for (int64, one per id), so bits per byte can be normalised over exactly
    the tokens a metric scored.

    Exact for ``byte`` and for byte-level BPE (each character of a ByteLevel token is one byte). ``word`` counts
    the word plus one separator and ``<eos>`` as 0: exact for every non-empty line of ``decode``'s output, one byte
    short per empty line (0.1% on WikiText-2).
    """
    cached = getattr(tokenizer, "_byte_lengths", None)
    if cached is not None:
        return cached
    if isinstance(tokenizer, ByteTokenizer):
        lengths = np.ones(tokenizer.vocab_size, dtype=np.int64)
    elif isinstance(tokenizer, WordTokenizer):
        lengths = np.asarray([len(w.encode("utf-8")) + 1 for w in tokenizer.itos], dtype=np.int64)
        lengths[tokenizer.eos_id] = 0
    elif isinstance(tokenizer, HFTokenizer):
        special = {t.content for t in tokenizer.tok.get_added_tokens_decoder().values()}
        lengths = np.zeros(tokenizer.vocab_size, dtype=np.int64)
        for i in range(tokenizer.vocab_size):
            piece = tokenizer.tok.id_to_token(i)
            if piece is None:
                continue
            lengths[i] = len(piece.encode("utf-8")) if piece in special else len(piece)
    else:  # any other Tokenizer: decode one id at a time (exact unless ids split UTF-8 characters)
        lengths = np.asarray(
            [len(tokenizer.decode([i]).encode("utf-8")) for i in range(tokenizer.vocab_size)], dtype=np.int64
        )
    try:
        tokenizer._byte_lengths = lengths
    except AttributeError:
        pass
    return lengths


def position_byte_lengths(tokenizer: Tokenizer, text: str) -> np.ndarray:
    """UTF-8 bytes of ``text`` each position of ``tokenizer.encode(text)`` covers; they sum to the text's bytes.

    For ``word`` the per-id table cannot be exact (``<unk>`` stands for many words; a line's leading space and its
    end-of-line belong to no word), so positions are measured on the text itself: a word covers its bytes plus one
    separator, a line's ``<eos>`` the rest of the line (leading or repeated spaces and the line break). Other
    tokenizers are exact per id (``token_byte_lengths``).
    """
    if not isinstance(tokenizer, WordTokenizer):
        return token_byte_lengths(tokenizer)[tokenizer.encode(text)]
    out: list[int] = []
    for line in text.splitlines(keepends=True):
        words = [len(w.encode("utf-8")) + 1 for w in line.split()]
        rest = len(line.encode("utf-8")) - sum(words)
        if rest < 0:  # the last word of a text without a final line break has no separator
            words[-1] += rest
            rest = 0
        out.extend(words)
        out.append(rest)
    return np.asarray(out, dtype=np.int64)
