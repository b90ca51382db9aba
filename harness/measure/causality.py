"""The causality guard: does any logit at position t depend on a token after t, or on another row of the batch?

Teacher-forced perplexity of a model that sees the future is meaningless (the target is in the input). The
published ResNet-BK core and some PSANN-LM variants do exactly that, and user models leak in subtler ways: only past
some length, only at odd positions, only in float32, only in train mode, across batch rows. So the guard probes the
model *as it is evaluated*: the evaluation length, batch size, dtype and device, real evaluation windows as input,
in eval mode and again in train mode (training through a leak is invalid too), with no float64 copy of the model
(affordable at 100M+ parameters):

1. **noise**: the same input twice (the random state reset before every forward, so dropout masks repeat): the
   model's own run-to-run noise. Tolerance = max(8 × noise, half an ulp of the logit scale in the output dtype).
   Causal models measure exactly 0 here (bit-identical prefixes), so any real dependence shows. A change above
   the tolerance but within rounding range (at most 64 ulps of the logit scale) is ambiguous — an honest FFT
   convolution couples positions at that level — so that one probe is repeated with the model cast to float64 in
   place (restored afterwards; no copy): rounding shrinks by orders of magnitude, a real leak (even 1e-6) does not.
2. **suffixes**: for cut points c of both parities (1, 2, 3, every power of two, random ones, each with c+1),
   tokens at positions >= c are changed; every logit at positions < c must stay.
3. **other rows**: all rows but one are changed; that row's logits must stay (and the other way round).
4. **Jacobian pattern** (exact, on a short prefix): the gradient of each position's logits with respect to the
   token embeddings of every later position must be zero. Needs an ``nn.Embedding`` of the vocabulary size.

Blind spots are in docs/causality.md; the perplexity measurement adds a backstop (results below the reachable floor
of a source are refused whatever the guard said).
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class CausalityResult:
    leak: bool
    max_delta: float  # largest |Δ logit| at positions/rows that must not change, over all probes
    position: int  # where it was seen (first changed position of the worst probe)
    tolerance: float
    seq_len: int
    probes: int
    batch: int = 1
    dtype: str = "float32"
    noise: float = 0.0
    probe: str | None = None  # which probe saw the worst change ("suffix from 17 (eval)", "other rows", ...)
    stage: str = "trained"  # "fresh" (before training) or "trained"
    checks: list[str] = field(default_factory=list)

    def message(self, model_name: str) -> str:
        when = " (freshly built, before training)" if self.stage == "fresh" else ""
        if self.leak:
            return (f"model {model_name} leaks future tokens{when}: logits at position {self.position} changed by "
                    f"{self.max_delta:.3g} under probe '{self.probe}' (tolerance {self.tolerance:.1g})")
        return f"model {model_name} is causal{when}: max change {self.max_delta:.3g} <= tolerance {self.tolerance:.1g}"

    def to_dict(self) -> dict:
        return asdict(self)


def _embedding(model: nn.Module, vocab_size: int) -> nn.Embedding | None:
    """The token embedding: the nn.Embedding whose table covers the vocabulary (the largest such one)."""
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding) and m.num_embeddings >= vocab_size]
    return max(tables, key=lambda m: m.num_embeddings, default=None)


def _cuts(seq_len: int, gen: torch.Generator) -> list[int]:
    """Cut points c in [1, seq_len - 1] of both parities: small ones, powers of two from the end, random ones."""
    base = {1, 2, 3, seq_len - 2, seq_len - 1}
    p = 1
    while p < seq_len:
        base |= {seq_len - p, p}
        p *= 2
    base |= {int(c) for c in torch.randint(1, max(2, seq_len - 1), (4,), generator=gen)}
    base |= {c + 1 for c in list(base)}
    return sorted(c for c in base if 1 <= c <= seq_len - 1)


def _shifted(x: torch.Tensor, vocab_size: int, gen: torch.Generator) -> torch.Tensor:
    """Every token changed (a shift mod V guarantees it)."""
    shift = torch.randint(1, vocab_size, x.shape, generator=gen).to(x.device)
    return (x + shift) % vocab_size


@torch.no_grad()
def check_causality(
    model: nn.Module,
    vocab_size: int,
    seq_len: int = 64,
    batch: int = 2,
    *,
    ids: torch.Tensor | None = None,
    modes: tuple[str, ...] = ("eval", "train"),
    jacobian_len: int = 32,
    seed: int = 0,
    stage: str = "trained",
) -> CausalityResult:
    """Probe ``model`` in place (its mode is restored) on ``ids`` (B, T) — real evaluation windows — or on random
    tokens of shape (batch, seq_len). Returns the worst change seen where none is allowed."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    if ids is None:
        ids = torch.randint(0, vocab_size, (max(2, batch), seq_len), generator=gen)
    x = ids.to(device=device, dtype=torch.long)
    if x.shape[0] < 2:  # other-row probes need two rows
        x = torch.cat([x, _shifted(x, vocab_size, gen)])
    bsz, length = x.shape
    was_training = model.training

    def run(inp: torch.Tensor, train: bool) -> torch.Tensor:
        model.train(train)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            return model(inp)

    worst = {"delta": 0.0, "position": 0, "probe": None, "inputs": None}
    noise, scale, dtype, checks, probes = 0.0, 0.0, torch.float32, [], 0

    def compare(a: torch.Tensor, b: torch.Tensor, name: str, inputs: tuple) -> None:
        nonlocal probes
        probes += 1
        d = (a.float() - b.float()).abs()
        if d.numel() == 0:
            return
        per_pos = d.amax(dim=(0, 2))
        value = float(per_pos.max())
        if value > worst["delta"]:
            changed = torch.nonzero(per_pos > 0)
            worst.update(delta=value, probe=name, position=int(changed[0]) if len(changed) else 0, inputs=inputs)

    try:
        for mode in modes:
            train = mode == "train"
            base = run(x, train)
            dtype = base.dtype
            scale = max(scale, float(base.detach().float().abs().max()))
            noise = max(noise, float((run(x, train).float() - base.float()).abs().max()))
            for c in _cuts(length, gen):
                x2 = x.clone()
                x2[:, c:] = _shifted(x[:, c:], vocab_size, gen)
                compare(base[:, :c], run(x2, train)[:, :c], f"suffix from {c} ({mode})",
                        (x, x2, train, (slice(None), slice(0, c))))
            for keep in (0, bsz - 1):  # change every other row; this row must not move
                x3 = _shifted(x, vocab_size, gen)
                x3[keep] = x[keep]
                compare(base[keep:keep + 1], run(x3, train)[keep:keep + 1], f"other rows than {keep} ({mode})",
                        (x, x3, train, (slice(keep, keep + 1), slice(None))))
            checks.append(f"{mode}: noise, suffix cuts of both parities, other rows")
        jac = _jacobian_probe(run, model, vocab_size, x[:1, : min(jacobian_len, length)])
        if jac is not None:
            probes += 1
            checks.append("eval: Jacobian pattern on a short prefix")
            if jac[0] > worst["delta"]:
                worst.update(delta=jac[0], probe="Jacobian (d logits[t] / d embedding[s > t])", position=jac[1],
                             inputs=None)
        eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
        tol = max(8.0 * noise, 0.5 * eps * max(1.0, scale))
        if tol < worst["delta"] <= 64 * eps * max(1.0, scale) and worst["inputs"] is not None and dtype != torch.float64:
            wide = _in_float64(model, run, worst["inputs"])
            checks.append(f"ambiguous change {worst['delta']:.3g} re-measured in float64: {wide:.3g}")
            if wide <= 1e-3 * worst["delta"]:  # rounding: it vanished with the precision
                worst.update(delta=0.0, probe=f"{worst['probe']}: rounding only (float64 {wide:.3g})")
    finally:
        model.train(was_training)
    return CausalityResult(
        leak=worst["delta"] > tol, max_delta=worst["delta"], position=worst["position"], tolerance=tol,
        seq_len=length, probes=probes, batch=bsz, dtype=str(dtype).removeprefix("torch."), noise=noise,
        probe=worst["probe"], stage=stage, checks=checks,
    )


def _in_float64(model: nn.Module, run, inputs: tuple) -> float:
    """The largest change of one probe with the model cast to float64 in place (and cast back afterwards)."""
    a, b, train, (rows, positions) = inputs
    dtype = next(p.dtype for p in model.parameters())
    try:
        model.to(torch.float64)
        return float((run(a, train)[rows, positions] - run(b, train)[rows, positions]).abs().max())
    finally:
        model.to(dtype)


def _jacobian_probe(run, model: nn.Module, vocab_size: int, x: torch.Tensor) -> tuple[float, int] | None:
    """max |d (r · logits[t]) / d emb[s]| over s > t, relative to the largest gradient seen (so it is scale-free
    and compares with the same tolerance); None when the model has no token embedding to differentiate."""
    emb = _embedding(model, vocab_size)
    if emb is None or x.shape[1] < 2:
        return None
    captured: list[torch.Tensor] = []

    def hook(module, inputs, output):  # noqa: ANN001, ANN202 - forward-hook signature
        out = output.detach().requires_grad_(True)
        captured.append(out)
        return out

    handle = emb.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = run(x, False)
            if not captured or not logits.requires_grad:
                return None
            full = [c for c in captured if c.dim() >= 2 and c.shape[1] == x.shape[1]]
            if not full:
                return None
            e = full[0]  # the token embedding of the whole input (a model may embed slices again)
            gen = torch.Generator().manual_seed(1)
            r = torch.randn(logits.shape[-1], generator=gen).to(logits.device, logits.dtype)
            worst, where, biggest = 0.0, 0, 0.0
            for t in range(x.shape[1] - 1):
                (g,) = torch.autograd.grad(logits[0, t] @ r, e, retain_graph=True)
                biggest = max(biggest, float(g.abs().max()))
                later = float(g[0, t + 1:].abs().max()) if g.shape[1] > t + 1 else 0.0
                if later > worst:
                    worst, where = later, t
    finally:
        handle.remove()
        with contextlib.suppress(Exception):
            model.zero_grad(set_to_none=True)
    return (worst / biggest if biggest > 0 else 0.0), where
