"""The token-level scorer every downstream number goes through: continuation log-likelihoods and greedy decoding.

Both the lmbench task runner (``harness.downstream.evaluate``) and the lm-evaluation-harness adapter
(``harness.adapters.lm_eval``) call these functions, so the two can only disagree in how they build requests,
never in how tokens are scored.

Truncation follows lm-eval's causal models: the model reads ``(context + continuation)[-(max_len + 1):][:-1]``,
i.e. at most ``max_len`` tokens, dropping the *oldest* context tokens first; the continuation itself is never cut
(one longer than ``max_len`` is scored in chunks, see ``score_token_pairs``). ``max_len`` is the model's maximum
context (the training sequence length for learned positions).

Requests are batched by length (longest first) and right-padded; a causal model's logits at a position do not
depend on later (padding) positions, so padding changes nothing. Log-softmax is taken in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from harness.data.base import Tokenizer
from harness.downstream.encoding import encode_text


@dataclass(frozen=True)
class TokenScore:
    """Log-likelihood (nats) of a continuation's tokens, whether greedy decoding would produce them, how many
    tokens were scored, how many context tokens the model saw for the first of them (after truncation), and in
    how many windows a continuation longer than ``max_len`` was scored."""

    logprob: float
    is_greedy: bool
    n_tokens: int
    n_context_used: int
    truncated: bool
    n_windows: int = 1


@torch.no_grad()
def score_token_pairs(
    model: nn.Module,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    max_len: int,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> list[TokenScore]:
    """Score ``(context_ids, continuation_ids)`` pairs: sum of log p(continuation token | everything before it,
    truncated to the last ``max_len`` tokens).

    A continuation longer than ``max_len`` (a PIQA solution in bytes) is scored in consecutive chunks of
    ``max_len`` tokens, each chunk as its own pair with everything before it as context: every token is still
    predicted exactly once from the ``max_len`` tokens before it (lm-eval's HF model refuses such pairs).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    chunks: list[tuple[int, list[int], list[int]]] = []  # (pair index, context, continuation chunk)
    for i, (ctx, cont) in enumerate(pairs):
        ctx, cont = list(ctx), list(cont)
        if len(ctx) == 0 or len(cont) == 0:
            raise ValueError(f"pair {i}: context and continuation must both have tokens (got {len(ctx)}, {len(cont)})")
        for a in range(0, len(cont), max_len):
            chunks.append((i, ctx + cont[:a], cont[a : a + max_len]))
    parts = _score_chunks(model, [(c, k) for _, c, k in chunks], max_len, batch_size, device)
    out: list[TokenScore] = []
    by_pair: dict[int, list[TokenScore]] = {}
    for (i, _, _), part in zip(chunks, parts):
        by_pair.setdefault(i, []).append(part)
    for i in range(len(pairs)):
        ps = by_pair[i]
        out.append(TokenScore(sum(p.logprob for p in ps), all(p.is_greedy for p in ps), sum(p.n_tokens for p in ps),
                              ps[0].n_context_used, ps[0].truncated, len(ps)))
    return out


def _score_chunks(model: nn.Module, pairs: list[tuple[list[int], list[int]]], max_len: int, batch_size: int,
                  device: torch.device | str) -> list[TokenScore]:
    """The batched core: each continuation fits in ``max_len``; input = (ctx + cont)[-(max_len+1):][:-1]."""
    inputs = [(ctx + cont)[-(max_len + 1):][:-1] for ctx, cont in pairs]
    order = sorted(range(len(pairs)), key=lambda i: -len(inputs[i]))
    out: list[TokenScore | None] = [None] * len(pairs)
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = len(inputs[idx[0]])
        x = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            x[row, : len(inputs[i])] = torch.as_tensor(inputs[i], dtype=torch.long)
        logp = torch.log_softmax(model(x.to(device)).double(), dim=-1).cpu()
        for row, i in enumerate(idx):
            ctx, cont = pairs[i]
            n_in, n_cont = len(inputs[i]), len(cont)
            cont_t = torch.as_tensor(cont, dtype=torch.long)
            lp = logp[row, n_in - n_cont : n_in]  # the positions that predict the continuation
            token_lp = lp.gather(-1, cont_t.unsqueeze(-1)).squeeze(-1)
            greedy = bool((lp.argmax(-1) == cont_t).all())
            used = n_in - n_cont + 1  # context tokens in the input window
            out[i] = TokenScore(float(token_lp.sum()), greedy, n_cont, used, used < len(ctx))
    return out  # type: ignore[return-value]


@torch.no_grad()
def greedy_generate(
    model: nn.Module,
    tokenizer: Tokenizer,
    context_ids: Sequence[int],
    until: Sequence[str],
    max_gen_toks: int,
    max_len: int,
    device: torch.device | str = "cpu",
) -> str:
    """Greedy decoding from ``context_ids`` until a stop string appears or ``max_gen_toks`` tokens are made.

    As in lm-eval, the context is cut from the left to ``max_len - max_gen_toks`` tokens so context plus
    generation fit the model; the text is cut before the first stop string. One full forward per new token (no
    key/value cache: lmbench models are plain ``ids -> logits`` modules).
    """
    if max_gen_toks < 1:
        return ""
    if max_gen_toks >= max_len:
        raise ValueError(f"max_gen_toks={max_gen_toks} must be below max_len={max_len}")
    ids = list(context_ids)[-(max_len - max_gen_toks):]
    n0 = len(ids)
    model.eval()
    text = ""
    for _ in range(max_gen_toks):
        x = torch.as_tensor([ids], dtype=torch.long, device=device)
        ids.append(int(model(x)[0, -1].argmax()))
        text = tokenizer.decode(ids[n0:])
        if any(s and s in text for s in until):
            break
    return cut_at_stop(text, until)


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = len(text)
    for s in until:
        if s:
            j = text.find(s)
            if j != -1:
                cut = min(cut, j)
    return text[:cut]


def generation_context_ids(tokenizer: Tokenizer, context: str, prefix_token_id: int) -> list[int]:
    """Ids a generation starts from: the context's ids, or the prefix token for an empty context."""
    ids = encode_text(tokenizer, context)
    return ids if ids else [prefix_token_id]
