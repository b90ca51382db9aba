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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.data.checkpoint import (
    HF_PREFIX,
    CheckpointTokenizer,
    checkpoint_reason,
    load_checkpoint_tokenizer,
    parse_hf_name,
)
from harness.models.base import LogitsOnly, ModelConfig, ModelSpec, count_parameters
from harness.registry import UnknownNameError

__all__ = ["HF_PREFIX", "PretrainedLM", "CheckpointTokenizer", "parse_hf_name", "load_pretrained",
           "load_checkpoint_tokenizer", "PretrainedUnavailable"]

class PretrainedUnavailable(ValueError):
    """The folder is not a loadable local checkpoint; the message says what is missing (shown to users as is)."""


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


def pretrained_spec(name: str) -> ModelSpec:
    """The registry entry of ``hf:PATH``: read from ``config.json`` alone (no weights loaded at validation time)."""
    import json

    path = parse_hf_name(name)
    if path is None:
        raise UnknownNameError(f"model {name!r}: give a folder after 'hf:' (hf:PATH)")
    reason = checkpoint_reason(path)
    if reason is not None:
        raise UnknownNameError(reason)
    config = json.loads((path / "config.json").read_text())
    limit = next((config[k] for k in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len")
                  if isinstance(config.get(k), int) and config[k] > 0), None)
    model_type = str(config.get("model_type", "?"))
    return ModelSpec(name=name, build=_never_built, causal=True, default=False, family=f"hf-{model_type}",
                     max_seq_len=limit, tokenizer=name, pretrained=str(path.resolve()),
                     notes=f"pretrained {model_type} from {path} evaluated without training; its own tokenizer, "
                           f"no BOS, special-token strings encoded as text")


def _never_built(cfg: ModelConfig) -> nn.Module:
    raise TypeError("a pretrained checkpoint is loaded (harness.models.pretrained.load_pretrained), never built")


def weights_fingerprint(path: str | Path) -> str:
    """Names, sizes and modification times of a checkpoint's files: a changed checkpoint is a new weights key."""
    from harness.data.cache import short_hash

    files = sorted(p for p in Path(path).iterdir() if p.is_file())
    return short_hash(*[(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files])
