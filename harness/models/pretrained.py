"""``hf:PATH``: a causal LM in Hugging Face format from a local folder, evaluated as is (no training).

The folder holds ``config.json``, the weights and the checkpoint's *own* tokenizer (``tokenizer.json`` or the files
``AutoTokenizer`` converts from). Nothing is downloaded (``local_files_only=True``), no code from the folder runs
(``trust_remote_code=False``), and weights are read from safetensors, or from a ``.bin`` only with
``torch.load(weights_only=True)``, so a checkpoint cannot execute code on load.

The tokenizer is wrapped as a ``CheckpointTokenizer`` (an ``HFTokenizer``), with the lmbench conventions:

* no special tokens are added (no BOS/EOS around the text) and special-token strings in the text are encoded as
  ordinary text (``encode_special_tokens``), like lmbench's ``gpt2`` tokenizer: for a GPT-2 checkpoint the ids
  are exactly those of ``--tokenizers gpt2``. A model trained with a BOS token at every document start sees none
  here, which costs it a little at the first tokens of each window;
* long texts are cut into pieces only for the GPT-2 pre-tokenizer (``ByteLevel`` with its built-in regex), where
  the cut is proven harmless; any other tokenizer encodes the whole text in one call (a SentencePiece-style
  tokenizer would otherwise insert a word-start marker at every cut);
* bytes per token (for bits per byte) are exact: for byte-level BPE each character of a token is one byte; for
  anything else the table is measured by decoding each id after a fixed anchor token, ``len(decode([a, i])) -
  len(decode([a]))`` in UTF-8 bytes, with byte-fallback tokens ``<0xHH>`` counted as 1. That is exact for
  SentencePiece-style tokenizers (``▁`` = one space byte) except for the first token of a text, whose dummy-prefix
  space is not in the text (one byte too many; the first token is never scored).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.data.cache import short_hash
from harness.data.tokenizers import HFTokenizer
from harness.models.base import LogitsOnly, count_parameters

__all__ = ["HF_PREFIX", "PretrainedLM", "CheckpointTokenizer", "parse_hf_name", "load_pretrained",
           "load_checkpoint_tokenizer", "PretrainedUnavailable"]

HF_PREFIX = "hf:"
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class PretrainedUnavailable(ValueError):
    """The folder is not a loadable local checkpoint; the message says what is missing (shown to users as is)."""


def parse_hf_name(name: str) -> Path | None:
    """``"hf:PATH"`` -> ``Path(PATH)`` (user home expanded); any other model name -> None."""
    if not name.startswith(HF_PREFIX) or len(name) == len(HF_PREFIX):
        return None
    return Path(name[len(HF_PREFIX):]).expanduser()


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
        raise PretrainedUnavailable(f"hf:{path}: cannot load its tokenizer ({type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())[:300]})") from exc
    backend = getattr(fast, "backend_tokenizer", None)
    if backend is None or not getattr(fast, "is_fast", False):
        raise PretrainedUnavailable(f"hf:{path}: the tokenizer is not a fast (tokenizers) tokenizer; save it with "
                                    f"tokenizer.json")
    return CheckpointTokenizer(backend, f"hf:{path}", source=str(path))


@dataclass
class PretrainedLM:
    """Everything the harness needs to evaluate a checkpoint without training it."""

    name: str  # "hf:<absolute path>"
    path: Path
    model: nn.Module  # ids (B, T) -> logits (B, T, V), eval mode
    tokenizer: CheckpointTokenizer
    vocab_size: int  # the model's output width (>= the tokenizer's)
    max_positions: int | None  # longest window the model accepts (None: no position limit, e.g. Mamba)
    parameters: dict[str, int]  # count_parameters of the model
    model_type: str
    notes: str = ""
    config: dict[str, Any] = field(default_factory=dict, repr=False)


def _weights_format(path: Path) -> bool:
    """True: safetensors; False: PyTorch .bin (read with weights_only=True). Raises if neither is there."""
    if any(path.glob("*.safetensors")):
        return True
    if any(path.glob("pytorch_model*.bin")):
        return False
    raise PretrainedUnavailable(f"hf:{path}: no weights (expected model.safetensors, sharded *.safetensors or "
                                f"pytorch_model.bin)")


def _max_positions(config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_pretrained(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                    attn_implementation: str | None = None) -> PretrainedLM:
    """Load model and tokenizer from a local Hugging Face folder (see the module doc for the safety rules)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise PretrainedUnavailable(f"hf:{path}: not a Hugging Face model folder (no config.json)")
    use_safetensors = _weights_format(path)
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        kwargs: dict[str, Any] = {}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        model = AutoModelForCausalLM.from_pretrained(
            str(path), config=config, local_files_only=True, trust_remote_code=False,
            use_safetensors=use_safetensors, weights_only=True, dtype=dtype, **kwargs,
        )
    except Exception as exc:
        raise PretrainedUnavailable(f"hf:{path}: cannot load it as a causal LM without remote code "
                                    f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from exc
    tokenizer = load_checkpoint_tokenizer(path)
    vocab = int(model.get_output_embeddings().weight.shape[0]) if model.get_output_embeddings() is not None \
        else int(config.vocab_size)
    if tokenizer.vocab_size > vocab:
        raise PretrainedUnavailable(f"hf:{path}: the tokenizer has {tokenizer.vocab_size} ids but the model only "
                                    f"{vocab} outputs")
    wrapped = LogitsOnly(model).to(device).eval()
    fmt = "safetensors" if use_safetensors else "pytorch .bin (weights_only)"
    return PretrainedLM(
        name=f"{HF_PREFIX}{path}", path=path, model=wrapped, tokenizer=tokenizer, vocab_size=vocab,
        max_positions=_max_positions(config), parameters=count_parameters(wrapped),
        model_type=str(getattr(config, "model_type", "")),
        notes=f"pretrained {getattr(config, 'model_type', '?')} from {path} ({fmt}), evaluated without training; "
              f"own tokenizer, no BOS, special-token strings encoded as text",
        config=config.to_dict(),
    )
