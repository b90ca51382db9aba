"""A Hugging Face checkpoint's own tokenizer (``hf:PATH``) behind the lmbench ``Tokenizer`` protocol.

Conventions (so numbers compare with lmbench's own tokenizers):

* no special tokens are added (no BOS/EOS around the text) and special-token strings in the text are encoded as
  ordinary text (``encode_special_tokens``), like lmbench's ``gpt2`` tokenizer: for a GPT-2 checkpoint the ids
  are exactly those of ``--tokenizer gpt2``;
* long texts are cut into pieces only for the GPT-2 pre-tokenizer (``ByteLevel`` with its built-in regex), where
  the cut is proven harmless; any other tokenizer encodes the whole text in one call;
* bytes per token (for bits per byte) are exact: for byte-level BPE each character of a token is one byte; for
  anything else the table is measured by decoding each id after a fixed anchor token, with byte-fallback tokens
  ``<0xHH>`` counted as 1 (exact for SentencePiece-style tokenizers except the first token of a text, never scored).

Only ``transformers``' tokenizer loading is used, with ``local_files_only=True`` and ``trust_remote_code=False``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from harness.data.base import DataUnavailable
from harness.data.cache import short_hash
from harness.data.tokenizers import HFTokenizer

__all__ = ["HF_PREFIX", "CheckpointTokenizer", "load_checkpoint_tokenizer", "parse_hf_name", "checkpoint_reason"]

HF_PREFIX = "hf:"
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def parse_hf_name(name: str) -> Path | None:
    """``"hf:PATH"`` -> ``Path(PATH)`` (user home expanded); any other name -> None."""
    if not name.startswith(HF_PREFIX) or len(name) == len(HF_PREFIX):
        return None
    return Path(name[len(HF_PREFIX):]).expanduser()


def checkpoint_reason(path: Path) -> str | None:
    """None if ``path`` looks like a local Hugging Face model folder, else the one-line reason."""
    if not (Path(path) / "config.json").is_file():
        return f"hf:{path}: not a Hugging Face model folder (no config.json); give the folder save_pretrained wrote"
    return None


def _is_gpt2_byte_level(spec: dict) -> bool:
    pre = spec.get("pre_tokenizer") or {}
    return pre.get("type") == "ByteLevel" and bool(pre.get("use_regex", True))


def _is_byte_level(spec: dict) -> bool:
    return (spec.get("decoder") or {}).get("type") == "ByteLevel"


class CheckpointTokenizer(HFTokenizer):
    """A checkpoint's own fast tokenizer behind the lmbench ``Tokenizer`` protocol (conventions: module doc)."""

    def __init__(self, tok, name: str, *, source: str = "") -> None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(tok.to_str())  # a private copy: the flag below must not leak to the caller
        tok.encode_special_tokens = True
        super().__init__(tok, name, source=source)
        spec = json.loads(tok.to_str())
        self.byte_level = _is_byte_level(spec)
        self._cut_pieces = _is_gpt2_byte_level(spec) and self.byte_level
        self._byte_fallback = bool((spec.get("model") or {}).get("byte_fallback"))
        self.fingerprint = short_hash("hf-checkpoint-tokenizer-v1", tok.to_str(), n=32)
        self._byte_lengths = self._measure_byte_lengths()

    def encode(self, text: str) -> np.ndarray:
        if self._cut_pieces:
            return super().encode(text)
        return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def _measure_byte_lengths(self) -> np.ndarray:
        V = self.vocab_size
        added = {i: t.content for i, t in self.tok.get_added_tokens_decoder().items()}
        pieces = [self.tok.id_to_token(i) for i in range(V)]
        if self.byte_level:  # each character of a byte-level piece stands for one byte; added tokens are literal
            return np.asarray([len(added[i].encode("utf-8")) if i in added else len(p) if p is not None else 0
                               for i, p in enumerate(pieces)], dtype=np.int64)
        anchor = self.tok.encode("a", add_special_tokens=False).ids[-1]
        base = len(self.tok.decode([anchor], skip_special_tokens=False).encode("utf-8"))
        decoded = self.tok.decode_batch([[anchor, i] for i in range(V)], skip_special_tokens=False)
        lengths = np.asarray([len(s.encode("utf-8")) - base for s in decoded], dtype=np.int64)
        if self._byte_fallback:
            for i, p in enumerate(pieces):
                if p is not None and _BYTE_TOKEN.match(p):
                    lengths[i] = 1
        return np.maximum(lengths, 0)


def load_checkpoint_tokenizer(path: str | Path) -> CheckpointTokenizer:
    """The folder's own tokenizer (fast tokenizers only: they carry the ``tokenizers.Tokenizer`` we wrap)."""
    from transformers import AutoTokenizer

    path = Path(path).expanduser().resolve()
    try:
        fast = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False,
                                             use_fast=True)
    except Exception as exc:
        raise DataUnavailable(f"hf:{path}: cannot load its tokenizer ({type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())[:300]})") from exc
    backend = getattr(fast, "backend_tokenizer", None)
    if backend is None or not getattr(fast, "is_fast", False):
        raise DataUnavailable(f"hf:{path}: the tokenizer is not a fast (tokenizers) tokenizer; save it with "
                                    f"tokenizer.json")
    return CheckpointTokenizer(backend, f"hf:{path}", source=str(path))
