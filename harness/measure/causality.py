"""The causality guard: does a model's output at position t depend on tokens after t?

Teacher-forced perplexity of a model that sees the future is meaningless (the target is in the input). The
published ResNet-BK core and some PSANN-LM variants do exactly that, so before a perplexity is trusted we
replace every token after t and require logits at positions <= t to stay the same. The check runs in float64
on a copy of the model, so the tolerance can be tight (1e-8 relative to the logit scale) and float32 batching
noise cannot hide a real leak nor fake one.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

DEFAULT_RTOL = 1e-8


@dataclass(frozen=True)
class CausalityResult:
    leak: bool
    max_delta: float  # largest |Δ logit| at positions <= t over all probes
    position: int  # the t where max_delta was seen
    tolerance: float
    seq_len: int
    probes: int

    def message(self, model_name: str) -> str:
        if self.leak:
            return (
                f"model {model_name} leaks future tokens: logits at position {self.position} changed by "
                f"{self.max_delta:.3g} when tokens after {self.position} changed (tolerance {self.tolerance:.1g})"
            )
        return f"model {model_name} is causal: max change {self.max_delta:.3g} <= tolerance {self.tolerance:.1g}"

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def check_causality(
    model: nn.Module,
    vocab_size: int,
    seq_len: int = 64,
    batch: int = 2,
    probes: tuple[float, ...] = (0.25, 0.5, 0.75),
    seed: int = 0,
    rtol: float = DEFAULT_RTOL,
) -> CausalityResult:
    """Perturb every token after t (for a few t) and measure the change of logits at positions <= t."""
    probe_model = copy.deepcopy(model).to("cpu", torch.float64).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab_size, (batch, seq_len), generator=g)
    base = probe_model(x)
    tol = rtol * max(1.0, float(base.abs().max()))
    worst, worst_t = 0.0, 0
    for frac in probes:
        t = min(seq_len - 2, max(0, int(frac * seq_len)))
        x2 = x.clone()
        # a shift mod V guarantees every later token really changes
        shift = torch.randint(1, vocab_size, (batch, seq_len - t - 1), generator=g)
        x2[:, t + 1 :] = (x[:, t + 1 :] + shift) % vocab_size
        delta = float((probe_model(x2)[:, : t + 1] - base[:, : t + 1]).abs().max())
        if delta > worst:
            worst, worst_t = delta, t
    return CausalityResult(
        leak=worst > tol, max_delta=worst, position=worst_t, tolerance=tol, seq_len=seq_len, probes=len(probes)
    )
