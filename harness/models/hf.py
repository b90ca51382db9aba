"""Hugging Face families built from a config (never downloaded): GPT-2 style, LLaMA style and Mamba.

Sizes per budget are chosen so that non-embedding parameter counts match across families within 10%
(GPT-2 block ≈ 12·d², LLaMA block with ffn = 8d/3 ≈ 12·d², a Mamba block ≈ 6·d², hence 1.5-2× the layers).
All heads are tied to the token embedding, so "embedding" parameters are one V×d table for every family.
"""
from __future__ import annotations

import logging

from torch import nn

from harness.models import MODELS
from harness.models.base import LogitsOnly, ModelConfig, ModelSpec

# One place for the widths every family shares per budget (ResNet-BK uses them too).
WIDTHS = {"smoke": 64, "small": 128, "full": 384}


def _quiet_transformers() -> None:
    # transformers logs a warning per Mamba model on CPU ("fast path is not available"); we say it once, in the
    # record's notes, instead.
    logging.getLogger("transformers.models.mamba.modeling_mamba").setLevel(logging.ERROR)


def build_gpt2(cfg: ModelConfig) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    p = cfg.preset
    conf = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.max_seq_len,
        n_embd=p["d_model"],
        n_layer=p["n_layer"],
        n_head=p["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
    )
    conf._attn_implementation = "eager"  # deterministic and causal-mask exact on CPU
    return LogitsOnly(GPT2LMHeadModel(conf))


def build_llama(cfg: ModelConfig) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    p = cfg.preset
    conf = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=p["d_model"],
        intermediate_size=p["d_ff"],
        num_hidden_layers=p["n_layer"],
        num_attention_heads=p["n_head"],
        num_key_value_heads=p["n_head"],
        max_position_embeddings=cfg.max_seq_len,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=None,
    )
    conf._attn_implementation = "eager"
    return LogitsOnly(LlamaForCausalLM(conf))


def build_mamba(cfg: ModelConfig) -> nn.Module:
    """HF ``MambaForCausalLM`` from config; on CPU its mixers run the fused selective-scan op.

    ``cfg.preset["scan"]`` picks the CPU scan: ``"fused"`` (default; the C++ ``lmbench::selective_scan`` op, ~10x
    faster to train than mamba.py on the smoke preset) or ``"pscan"`` (mamba.py's parallel scan, pure PyTorch: the
    behaviour before the fused op, kept for comparisons). If the fused kernel cannot be built, the model keeps
    mamba.py's scan after one warning. Either way the modules and state dict are HF's own.
    """
    from transformers import MambaConfig, MambaForCausalLM

    _quiet_transformers()
    p = cfg.preset
    scan = p.get("scan", "fused")
    if scan not in ("fused", "pscan"):
        raise ValueError(f"mamba preset 'scan' must be 'fused' or 'pscan', got {scan!r}")
    conf = MambaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=p["d_model"],
        num_hidden_layers=p["n_layer"],
        state_size=p.get("d_state", 16),
        expand=2,
        conv_kernel=4,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        use_mambapy=True,  # mamba.py's parallel scan wherever the fused op does not run (CUDA, or no C++ build)
    )
    model = MambaForCausalLM(conf)
    if scan == "fused":
        from harness.models.mamba_fused import fused_scan_available, install_fused_scan

        if fused_scan_available():  # a failed build has warned once already; the model keeps mamba.py's scan
            install_fused_scan(model)
    return LogitsOnly(model)


def _mamba_notes() -> str:
    """Which selective-scan implementation runs: it changes speed (not results), so every record says it.

    Exact once the fused kernel's build has been tried in this process (building a model tries it); before that, the
    notes state the rule, since the registry is filled at import, when building (up to a minute) would be too early.
    """
    import importlib.util

    from harness.kernels.selective_scan import cpu as scan_cpu

    head = "MambaForCausalLM from config"
    cuda = ("mamba_ssm CUDA kernels on CUDA" if importlib.util.find_spec("mamba_ssm") is not None
            else "mamba.py parallel scan on CUDA")
    if importlib.util.find_spec("mambapy") is not None:
        slow = "mamba.py parallel scan (pscan, pure PyTorch)"
    else:
        slow = "transformers' sequential reference scan (no mambapy)"
    fused = "fused lmbench::selective_scan C++ op (exact chunked backward)"
    status = scan_cpu.build_status()
    if status == "built":
        return f"{head}; CPU: {fused}; {cuda}"
    if status == "failed":
        return f"{head}; CPU: {slow}: the fused C++ scan failed to build ({scan_cpu.build_error()}); {cuda}"
    return f"{head}; CPU: {fused}, or {slow} if that kernel cannot be built (a warning says so); {cuda}"


MODELS.add(
    "transformer",
    ModelSpec(
        name="transformer",
        family="gpt2",
        build=build_gpt2,
        presets={
            "smoke": {"d_model": WIDTHS["smoke"], "n_layer": 2, "n_head": 4},
            "small": {"d_model": WIDTHS["small"], "n_layer": 4, "n_head": 4},
            "full": {"d_model": WIDTHS["full"], "n_layer": 6, "n_head": 6},
        },
        notes="GPT2LMHeadModel from config, learned absolute positions, tied head, eager attention",
        extrapolates=False,  # its position table has exactly the training length's rows
    ),
)

MODELS.add(
    "llama",
    ModelSpec(
        name="llama",
        family="llama",
        build=build_llama,
        presets={
            "smoke": {"d_model": WIDTHS["smoke"], "n_layer": 2, "n_head": 4, "d_ff": 172},
            "small": {"d_model": WIDTHS["small"], "n_layer": 4, "n_head": 4, "d_ff": 344},
            "full": {"d_model": WIDTHS["full"], "n_layer": 6, "n_head": 6, "d_ff": 1024},
        },
        notes="LlamaForCausalLM from config (RoPE, RMSNorm, SwiGLU), tied head, eager attention",
    ),
)

MODELS.add(
    "mamba",
    ModelSpec(
        name="mamba",
        family="mamba",
        build=build_mamba,
        presets={
            "smoke": {"d_model": WIDTHS["smoke"], "n_layer": 3},
            "small": {"d_model": WIDTHS["small"], "n_layer": 7},
            "full": {"d_model": WIDTHS["full"], "n_layer": 11},
        },
        notes=_mamba_notes(),
    ),
)
