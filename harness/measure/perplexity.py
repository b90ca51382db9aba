"""The perplexity measurement: the causality guard first, then sliding-window NLL on a held-out split.

Sliding windows with an explicit protocol:

Each window of ``window`` tokens advances by ``stride`` and scores only the tokens no earlier window scored. With
stride < window every token after the first is scored exactly once and sees at least ``window - stride`` tokens
of context; with stride == window (disjoint windows, the default) the first token of each window has no context
and is not scored (the Hugging Face "perplexity of fixed-length models" method, but summing
exact per-token NLLs instead of the guide's ``mean_loss * trg_len`` approximation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from harness.measure.causality import check_causality
from harness.measure.result import Result

if TYPE_CHECKING:
    from harness.provision import Provisioned

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Window:
    begin: int  # first input position
    end: int  # one past the last input position
    score_from: int  # first *global* target index scored in this window


def plan_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    if window < 2 or stride < 1 or stride > window:
        raise ValueError(f"need window >= 2 and 1 <= stride <= window, got window={window}, stride={stride}")
    out: list[Window] = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        if end - begin < 2:
            break  # a one-token window predicts nothing
        out.append(Window(begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n_tokens:
            break
    return out


def scored_mask(n_tokens: int, window: int, stride: int) -> np.ndarray:
    """Boolean mask of the token positions a sliding-window evaluation scores (for exact normalisers)."""
    mask = np.zeros(n_tokens, dtype=bool)
    for w in plan_windows(n_tokens, window, stride):
        mask[w.score_from : w.end] = True
    return mask


@torch.no_grad()
def sliding_window_nll(
    model: nn.Module,
    ids: np.ndarray | torch.Tensor,
    window: int,
    stride: int | None = None,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> tuple[float, int]:
    """Sum of next-token NLL (nats) over the scored tokens, and how many were scored. Windows of equal length are
    batched; the result equals ``reference_sliding_window_nll`` (tested to 1e-6)."""
    stride = stride or window
    ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    plan = plan_windows(len(ids_t), window, stride)
    model.eval()
    total, count = 0.0, 0
    groups: dict[int, list[Window]] = {}
    for w in plan:
        groups.setdefault(w.end - w.begin, []).append(w)
    for length, wins in groups.items():
        for i in range(0, len(wins), batch_size):
            chunk = wins[i : i + batch_size]
            x = torch.stack([ids_t[w.begin : w.end] for w in chunk]).to(device)
            logp = torch.log_softmax(model(x).double(), dim=-1)[:, :-1]  # predicts positions 1..length-1
            tgt = x[:, 1:]
            nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (b, length-1)
            pos = torch.arange(1, length, device=nll.device)  # local target positions
            starts = torch.tensor([w.score_from - w.begin for w in chunk], device=nll.device)
            mask = pos.unsqueeze(0) >= starts.unsqueeze(1)
            total += float(nll[mask].sum())
            count += int(mask.sum())
    return total, count


@torch.no_grad()
def reference_sliding_window_nll(
    model: nn.Module, ids: np.ndarray | torch.Tensor, window: int, stride: int | None = None
) -> tuple[float, int]:
    """The plain loop of the Hugging Face guide, one window at a time with ``-100`` labels, summing exact NLLs.
    Kept deliberately naive: it is the ground truth for ``sliding_window_nll``."""
    stride = stride or window
    ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    n = len(ids_t)
    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        trg_len = end - prev_end
        input_ids = ids_t[begin:end].unsqueeze(0)
        labels = input_ids.clone()
        labels[:, :-trg_len] = -100
        logits = model(input_ids).double()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        loss = nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += int((shift_labels != -100).sum())
        prev_end = end
        if end == n:
            break
    return total, count


@dataclass
class PerplexityResult:
    """Total NLL and the size of exactly what was scored: tokens, their bytes, their words (may be pro-rated)."""

    nll_sum: float
    n_tokens: int
    n_bytes: int
    n_words: float | None

    @property
    def nll_per_token(self) -> float:
        return self.nll_sum / self.n_tokens

    def metrics(self) -> dict[str, float | None]:
        return {
            "nll": self.nll_per_token,
            "ppl": math.exp(self.nll_per_token),
            "bits_per_byte": self.nll_sum / LN2 / self.n_bytes,
            "word_ppl": math.exp(self.nll_sum / self.n_words) if self.n_words else None,
            "n_tokens": float(self.n_tokens),
            "n_bytes": float(self.n_bytes),
            "n_words": float(self.n_words) if self.n_words else None,
        }


def unigram_nll(train_ids: np.ndarray, scored_ids: np.ndarray, vocab_size: int) -> float:
    """Per-token NLL (nats) of an add-one unigram model fit on ``train_ids``, scored on exactly ``scored_ids`` (the
    tokens the model was scored on): the floor any model that uses context at all must beat."""
    counts = np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(scored_ids, dtype=np.int64)].mean())


# ---------------------------------------------------------------------------------------------------- measurement


def measure(pm: "Provisioned", split: str = "test", guard: bool = True) -> Result:
    """Guard, then score ``split`` of the cell's dataset under ``pm.eval_cfg`` (window defaults to the training
    length). A diverged model, a leak or an impossible number is a status hint on the result, never an exception.
    ``guard=False`` is for a variant of weights already guarded (a quantized copy): the protocol says so."""
    cfg = pm.eval_cfg
    window = cfg.window or pm.train_cfg.seq_len
    stride = cfg.stride or window
    all_ids = pm.ids(split)
    ids = all_ids[: cfg.eval_tokens] if cfg.eval_tokens is not None else all_ids
    protocol: dict[str, Any] = {
        "dataset": pm.cell.dataset, "split": split, "tokenizer": pm.tokenizer.name, "unit": "token",
        "window": window, "stride": stride, "eval_tokens": int(len(ids)), "split_tokens": int(len(all_ids)),
        "eval_batch_size": cfg.batch_size, "device": str(pm.device),
        "scored": "tokens no earlier window scored; exact per-token NLL summed in float64",
    }
    if pm.preflight is not None:  # the guard caught the freshly built model: it was never trained
        protocol["causality"] = {"fresh": pm.preflight.to_dict()}
        return Result(metrics={"causality_max_delta": pm.preflight.max_delta}, protocol=protocol, status="leak",
                      reason=pm.preflight.message(pm.cell.model), leak=True)
    if pm.diverged:
        return Result(protocol=protocol, status="diverged",
                      reason=f"{pm.cell.model} diverged at step {pm.train.diverged_step} (non-finite loss or "
                             f"gradient norm; the loss curve is in the record): try other seeds or a lower lr")
    metrics: dict[str, Any] = {}
    leak = None
    if guard:
        leak = guard_model(pm, ids, window)
        metrics["causality_max_delta"] = leak.max_delta
        protocol["causality"] = {"trained": leak.to_dict()}
    else:
        protocol["causality"] = "not run on this variant (its source weights were guarded)"
    nll_sum, n_scored = sliding_window_nll(pm.module, ids, window, stride, cfg.batch_size, pm.device)
    scored = scored_mask(len(ids), window, stride)
    if int(scored.sum()) != n_scored:
        raise AssertionError(f"scored {n_scored} tokens but the window plan covers {int(scored.sum())}")
    n_bytes = int(pm.byte_lengths(split)[: len(ids)][scored].sum())
    n_words, word_unit = _scored_words(pm, split, ids, scored, n_bytes)
    metrics.update(PerplexityResult(nll_sum, n_scored, n_bytes, n_words).metrics())
    metrics.update(_lm_eval_normalisers(pm, ids, scored, nll_sum, n_bytes))
    train_ids = pm.ids("train")
    # Without a train split (an eval-only dataset for a pretrained model) the unigram is fitted on the scored text
    # itself: an optimistic baseline, so beating it is only harder.
    protocol["unigram_fit"] = "train split" if len(train_ids) else "the evaluated tokens (no train split)"
    fit = train_ids if len(train_ids) else ids[scored]
    metrics["unigram_ppl"] = math.exp(unigram_nll(fit, ids[scored], pm.tokenizer.vocab_size))
    metrics["ppl_over_unigram"] = metrics["ppl"] / metrics["unigram_ppl"]
    refusal = _floors(pm, ids, window, stride, scored, nll_sum, n_scored, n_bytes, metrics, protocol)
    protocol["normalisers"] = "tokens, bytes (of the text they cover) and words of exactly the scored tokens"
    protocol["word_unit"] = word_unit
    if (leak is not None and leak.leak) or refusal:
        # Its perplexity is not a perplexity (the targets were in the input): kept only under names no table or
        # target reads, so the leak can be shown ("0.88x the entropy floor") but never compared.
        kept = {f"leaky_{k}": metrics[k] for k in ("ppl", "ppl_over_floor", "ppl_over_reachable_floor")
                if k in metrics}
        reason = leak.message(pm.cell.model) if leak is not None and leak.leak else refusal
        return Result(metrics={"causality_max_delta": metrics.get("causality_max_delta")} | kept, protocol=protocol,
                      status="leak", reason=reason, leak=True)
    status, reason = (None, None) if math.isfinite(metrics["nll"]) else ("nonfinite", f"held-out NLL is {metrics['nll']}")
    return Result(metrics=metrics, protocol=protocol, status=status, reason=reason,
                  leak=None if leak is None else False)


def guard_model(pm: "Provisioned", ids: np.ndarray, window: int):
    """The causality guard at the evaluation shape, on the first evaluation windows (real data: a leak keyed on
    the data distribution shows too), in eval and train mode."""
    batch = pm.eval_cfg.batch_size
    n = min(batch, len(ids) // window)
    probe = torch.as_tensor(np.asarray(ids[: n * window], dtype=np.int64)).reshape(n, window) if n >= 1 else None
    return check_causality(pm.module, pm.tokenizer.vocab_size, seq_len=window, batch=batch, ids=probe)


SIGMAS = 5.0  # a result this many standard errors below the reachable floor is refused as a leak


def reachable_floor_bits(context_entropy_bits: list[float], n_tokens: int, window: int, stride: int,
                         chain_stride: int | None) -> np.ndarray:
    """Per scored position, the entropy (bits) of its symbol given only the context the protocol gives it: the
    tokens of its window before it, within its own chain of the source (chains are independent)."""
    k = len(context_entropy_bits) - 1
    h = np.asarray(context_entropy_bits)
    out = []
    for w in plan_windows(n_tokens, window, stride):
        pos = np.arange(w.score_from, w.end)
        ctx = pos - w.begin
        if chain_stride:
            ctx = np.minimum(ctx, pos % chain_stride)
        out.append(h[np.minimum(ctx, k)])
    return np.concatenate(out) if out else np.zeros(0)


def _floors(pm: "Provisioned", ids: np.ndarray, window: int, stride: int, scored: np.ndarray, nll_sum: float,
            n_scored: int, n_bytes: int, metrics: dict[str, Any], protocol: dict[str, Any]) -> str | None:
    """Entropy-rate and reachable floors of a synthetic source; a reason if the result is below what any causal
    model can reach (beyond sampling noise), else None."""
    floor_bits = pm.corpus.entropy_rate_bits
    if floor_bits is None:
        return None
    ln2 = math.log(2)
    # The source's entropy per byte times bytes per token: the per-token floor for any tokenizer.
    metrics["floor_ppl"] = math.exp(floor_bits * ln2 * n_bytes / n_scored)
    metrics["ppl_over_floor"] = metrics["ppl"] / metrics["floor_ppl"]
    metrics["floor_bits_per_byte"] = floor_bits
    meta = pm.corpus.meta
    reachable = floor_bits * n_bytes  # bits over the scored text
    if pm.tokenizer.name == "byte" and meta.get("context_entropy_bits"):
        per_pos = reachable_floor_bits(meta["context_entropy_bits"], len(ids), window, stride,
                                       (meta.get("chain_stride") or {}).get(protocol["split"]))
        reachable = float(per_pos.sum())
        metrics["reachable_floor_ppl"] = math.exp(reachable * ln2 / n_scored)
        metrics["ppl_over_reachable_floor"] = metrics["ppl"] / metrics["reachable_floor_ppl"]
        protocol["reachable_floor"] = ("per scored symbol, H(X | the context this protocol gives it: earlier tokens "
                                       "of its window within its chain)")
    sigma = meta.get("surprisal_std_bits")
    if sigma is None:
        return None
    deficit = (reachable - nll_sum / ln2) / n_bytes  # bits per byte below the floor
    bound = SIGMAS * sigma / math.sqrt(n_bytes)
    metrics["floor_deficit_bits_per_byte"] = deficit
    protocol["floor_check"] = f"refused if more than {SIGMAS:g} standard errors ({bound:.3g} bits/byte) below"
    if deficit > bound:
        return (f"{pm.cell.model} scores {deficit:.3g} bits/byte below the reachable floor of {pm.cell.dataset}, "
                f"more than {SIGMAS:g} standard errors ({bound:.3g}) over {n_bytes:,} bytes: no causal model can; "
                f"it sees future tokens (the guard did not catch it), so the number is refused")
    return None


def _lm_eval_normalisers(pm: "Provisioned", ids: np.ndarray, scored: np.ndarray, nll_sum: float,
                         n_bytes: int) -> dict[str, float]:
    """lm-evaluation-harness's normalisers on this protocol's NLL, under names that cannot be confused with ours:
    words are ``re.split(r"\\s+", text)`` pieces (lm-eval's ``count_words``), bytes the UTF-8 bytes. (lm-eval
    itself scores whole documents with rolling windows: for its document-level numbers use the lm-eval bridge.)"""
    import re

    out = {"lmeval_byte_perplexity": math.exp(nll_sum / n_bytes), "lmeval_bits_per_byte": nll_sum / math.log(2) / n_bytes}
    if pm.corpus.word_level:  # words are not defined on a symbol stream (it would be one "word")
        text = pm.tokenizer.decode(ids)
        words = len(re.split(r"\s+", text)) * n_bytes / max(1, len(text.encode("utf-8")))
        out["lmeval_word_perplexity"] = math.exp(nll_sum / words)
    return out


def _scored_words(pm: "Provisioned", split: str, ids: np.ndarray, scored: np.ndarray,
                  n_bytes: int) -> tuple[float | None, str | None]:
    """Words behind the scored tokens: exact for the word tokenizer (one token per word or <eos>); for subword
    tokenizers the words of the evaluated text pro-rated by the fraction of its bytes that were scored."""
    if not pm.corpus.word_level:
        return None, None
    if pm.tokenizer.name == "word":
        return float(scored.sum()), "word tokens + <eos> (exact)"
    text = pm.tokenizer.decode(ids)
    words = sum(len(line.split()) + 1 for line in text.splitlines())
    total_bytes = int(pm.byte_lengths(split)[: len(ids)].sum()) or 1
    return words * n_bytes / total_bytes, "whitespace words + one <eos> per line, pro-rated by scored bytes"
