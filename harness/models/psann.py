"""PSANN-LM (the ``psannlm`` package, MIT): transformers whose MLP uses a learned damped sine activation.

Built with the package's own typed config and builder (``psannlm.LMConfig`` + ``psannlm.build_lm_model``), never
re-implemented, so what is benchmarked is what the package builds. The built module maps ``input_ids`` (B, T) to
logits (B, T, V) already (``forward(input_ids)`` returns a tensor when ``use_cache`` is False); it has an
``nn.Embedding`` named ``embed`` and an untied ``nn.Linear`` named ``lm_head``. Four variants:

* ``psann-respsann``: kind "residual", pre-RMSNorm blocks: causal softmax attention (RoPE) + MLP with the PSANN
  sine activation A·exp(-d·|z|)·sin(f·z) per feature, scaled by a learned residual alpha. Causal.
* ``psann-sgrpsann``: the same plus a *spectral gate* after every MLP (``psann.layers.SpectralGate1D``): it takes
  the last k_fft = 64 positions, multiplies their rFFT along time by sigmoid(mask) per (channel, frequency) and
  transforms back. At initialisation mask = 0 everywhere, the gate is the constant 1/2 and the branch is 0.5·x,
  pointwise in time (the guard passes, up to 1e-15 rounding). Once the mask is trained it is no longer constant
  over frequency, the branch becomes a *circular* convolution over the window, and a position sees later
  positions (one optimiser step is enough; see tests/test_new_models.py). Leaky: ``causal=False``.
* ``psann-waveresnet``: kind "wave" with the package's default temporal mode "disabled": block for block the same
  computation as respsann (a separate class, ``WaveResNetTransformer``). Causal.
* ``psann-waveresnet-interleave``: temporal mode "interleave" adds a residual depthwise Conv1d over time after
  each block with *symmetric* padding (k-1)/2 (kernel 3): position t reads t+1. Leaky: ``causal=False``.

All four are opt-in (``default=False``): they need the optional extra (``pip install 'lmbench[psann]'``) and two
of them leak. Registration never imports ``psannlm``; without it, building raises ``ModelUnavailable``.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from torch import nn

from harness.models import MODELS
from harness.models.base import ModelConfig, ModelSpec, ModelUnavailable
from harness.models.hf import WIDTHS

__all__ = ["VARIANTS", "build_psann", "psann_lm_config", "psann_available", "PRESETS"]

INSTALL_HINT = "pip install 'lmbench[psann]'"

# name -> (package architecture kind, spectral gate?, temporal mode, causal)
VARIANTS: dict[str, tuple[str, bool, str | None, bool]] = {
    "psann-respsann": ("residual", False, None, True),
    "psann-sgrpsann": ("residual", True, None, False),
    "psann-waveresnet": ("wave", False, "disabled", True),
    "psann-waveresnet-interleave": ("wave", False, "interleave", False),
}


def psann_available() -> str | None:
    if importlib.util.find_spec("psannlm") is None:
        return f"the PSANN-LM models need the psannlm package: {INSTALL_HINT}"
    return None


def psann_lm_config(variant: str, cfg: ModelConfig) -> Any:
    """The package's own ``LMConfig`` for ``variant`` at ``cfg``'s size (every other option the package default,
    except dropout 0 and the deterministic "math" attention, as for every lmbench family)."""
    from psann.architectures import SpectralConfig
    from psannlm import LMArchitectureConfig, LMConfig, LMTemporalConfig

    kind, spectral, temporal, _ = VARIANTS[variant]
    if kind == "residual":
        arch = LMArchitectureConfig.residual(spectral=SpectralConfig() if spectral else None)
    else:
        arch = LMArchitectureConfig.wave(temporal=LMTemporalConfig(mode=temporal))
    p = cfg.preset
    return LMConfig(architecture=arch, d_model=p["d_model"], n_layers=p["n_layer"], n_heads=p["n_head"],
                    d_mlp=p["d_mlp"], vocab_size=cfg.vocab_size, dropout=0.0, positional_encoding="rope",
                    attention_implementation="math")


def build_psann(variant: str, cfg: ModelConfig) -> nn.Module:
    reason = psann_available()
    if reason is not None:
        raise ModelUnavailable(f"model {variant!r}: {reason}")
    from psannlm import build_lm_model

    return build_lm_model(psann_lm_config(variant, cfg)).model


def _builder(variant: str):
    def build(cfg: ModelConfig) -> nn.Module:
        return build_psann(variant, cfg)

    build.__name__ = f"build_{variant.replace('-', '_')}"
    return build


def _presets(d_mlp_ratio: float) -> dict[str, dict[str, Any]]:
    """GPT-2 family depths and widths (the block is ~12·d² like GPT-2's); ``d_mlp_ratio`` trims the MLP where a
    variant adds parameters elsewhere, so non-embedding counts stay matched."""
    shape = {"smoke": (2, 4), "small": (4, 4), "full": (6, 6)}  # n_layer, n_head
    return {b: {"d_model": WIDTHS[b], "n_layer": L, "n_head": H, "d_mlp": int(d_mlp_ratio * WIDTHS[b])}
            for b, (L, H) in shape.items()}


# The interleaved wave block adds ~d² + 8d per layer (a d×d projection); 3.5·d instead of 4·d MLP width pays for it.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    name: _presets(3.5 if VARIANTS[name][2] == "interleave" else 4.0) for name in VARIANTS
}

_NOTES = {
    "psann-respsann": "psannlm residual kind (ResPSANNTransformer): RoPE causal attention + damped-sine MLP, "
                      "untied head",
    "psann-sgrpsann": "psannlm residual kind with spectral gate: circular FFT gate over the last 64 positions sees "
                      "future tokens once its mask is trained (causal only at init)",
    "psann-waveresnet": "psannlm wave kind, temporal mode disabled (default): same blocks as respsann, untied head",
    "psann-waveresnet-interleave": "psannlm wave kind, temporal mode interleave: depthwise Conv1d with symmetric "
                                   "padding reads token t+1",
}

for _name, (_kind, _spectral, _temporal, _causal) in VARIANTS.items():
    MODELS.add(_name, ModelSpec(name=_name, family="psann", build=_builder(_name), causal=_causal, default=False,
                                presets=PRESETS[_name], notes=_NOTES[_name], available=psann_available))
