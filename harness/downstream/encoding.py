"""Tokenizer-consistent context/continuation splits: the one place that decides which tokens are "the answer".

The rules are lm-evaluation-harness' (``TemplateLM.loglikelihood`` and ``_encode_pair``), so a number from lmbench
and a number from ``lm_eval --model lmbench`` are the same number:

1. Trailing whitespace of the context moves to the front of the continuation ("Answer: " + "yes" is scored as
   "Answer:" + " yes"). BPE vocabularies glue a space to the *next* word (" yes" is one GPT-2 token), so a space
   left at the end of the context would be a lone, rare token there and the answer would be scored without it.
2. Context and continuation are encoded *together* and split at the length of the context's own encoding. A
   continuation encoded on its own can tokenize differently from how it tokenizes after the context.
3. An empty context is replaced by one prefix token (end-of-text), so the first continuation token has something
   to condition on; if the continuation already starts with that token, it becomes the context instead.

For byte-level tokenizers rules 1-2 change nothing (every byte is a token), which is why a byte model and a BPE
model score "the same example" the same way up to their probabilities.

The ``word`` tokenizer ends every line with ``<eos>``, including a last line with no newline. Scoring fragments
("the cat", then " sat") must not put an ``<eos>`` after each fragment, so ``encode_text`` drops that final
``<eos>`` when the text does not itself end with a newline.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.base import Tokenizer

ENDOFTEXT = "<|endoftext|>"


def encode_text(tokenizer: Tokenizer, text: str) -> list[int]:
    """Ids of ``text`` as a fragment of a longer text (see the module doc for the ``word`` tokenizer rule)."""
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64).tolist()
    eos = getattr(tokenizer, "eos_id", None)
    if eos is not None and ids and ids[-1] == eos and not text.endswith(("\n", "\r")):
        ids.pop()
    return ids


def default_prefix_token_id(tokenizer: Tokenizer) -> int:
    """The token an empty context (and a rolling-perplexity document) starts from.

    In order: the tokenizer's ``eos_id`` (``word``), the id of ``<|endoftext|>`` when the vocabulary has it
    (``gpt2``), else the single id of a newline (``byte``, ``bpe-<V>``): lmbench models are trained on running
    text, where a line break is the nearest thing to a document boundary they have seen.
    """
    eos = getattr(tokenizer, "eos_id", None)
    if eos is not None:
        return int(eos)
    inner = getattr(tokenizer, "tok", None)
    if inner is not None and hasattr(inner, "token_to_id"):
        tid = inner.token_to_id(ENDOFTEXT)
        if tid is not None:
            return int(tid)
    nl = encode_text(tokenizer, "\n")
    if len(nl) == 1:
        return int(nl[0])
    return 0


@dataclass(frozen=True)
class EncodedPair:
    """The token ids scored for one (context, continuation) request.

    ``boundary_merged`` is True when the joint encoding does not start with the context's own encoding (a token
    straddles the boundary, e.g. context "Answer:y" + continuation "es" in BPE): the split is then lm-eval's
    (by count) but the continuation tokens are not exactly the continuation text. Recorded, never hidden.
    """

    context: str  # after moving trailing whitespace
    continuation: str
    context_ids: tuple[int, ...]
    continuation_ids: tuple[int, ...]
    boundary_merged: bool = False


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str, prefix_token_id: int) -> EncodedPair:
    """Split ``context + continuation`` into context ids and continuation ids by lm-eval's rules (module doc)."""
    if context == "":
        cont = encode_text(tokenizer, continuation)
        if not cont:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens")
        if cont[0] != prefix_token_id:
            return EncodedPair("", continuation, (prefix_token_id,), tuple(cont))
        if len(cont) < 2:
            raise ValueError(f"continuation {continuation!r} is only the prefix token")
        return EncodedPair("", continuation, tuple(cont[:1]), tuple(cont[1:]))
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if context == "":  # a whitespace-only context: lm-eval would fail here; condition on the prefix token
        return encode_pair(tokenizer, "", continuation, prefix_token_id)
    whole = encode_text(tokenizer, context + continuation)
    ctx = encode_text(tokenizer, context)
    cont = whole[len(ctx):]
    if not cont:
        raise ValueError(f"continuation {continuation!r} merges into the context {context[-40:]!r}: no tokens left "
                         f"to score")
    return EncodedPair(context, continuation, tuple(ctx), tuple(cont), boundary_merged=whole[: len(ctx)] != ctx)
