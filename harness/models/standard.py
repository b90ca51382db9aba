"""Published shapes, trained from scratch: GPT-2 small (124M) and medium (355M), and a 25M LLaMA.

These are fixed architectures, not budget-matched families: each is defined at ``--budget full`` only
(``fixed_shape``): at another budget its cells are skipped with a reason naming the model and the budget (a 124M
model is not a "smoke" model, and a shrunken one would not be GPT-2 small). All are opt-in (``default=False``): far too big for a CPU smoke run.

* ``gpt2-124m``: 12 layers, d 768, 12 heads, 1024 learned positions, head tied to the token table. With the
  ``gpt2`` tokenizer (V = 50257) it has exactly GPT-2 small's 124,439,808 parameters (85,056,000 non-embedding).
* ``gpt2-355m``: 24 layers, d 1024, 16 heads, 1024 positions: 354,823,168 at V = 50257 (302,311,424 non-embedding).
* ``llama-tiny``: 8 layers, d 512, 8 heads (head dim 64), SwiGLU d_ff 1376 (≈ 8d/3), RoPE, RMSNorm, tied head:
  25,305,600 non-embedding parameters, the size of the reference BDH (25.2M), plus V·512 for the tied table.

GPT-2's position table has 1024 rows whatever the run's sequence length (that is the published shape); a run with
``seq_len`` > 1024 is refused. Dropout is 0, as for every family.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from harness.models import MODELS
from harness.models.base import LogitsOnly, ModelConfig, ModelSpec

__all__ = ["GPT2_SHAPES", "LLAMA_TINY", "build_gpt2_shape", "build_llama_shape"]

GPT2_POSITIONS = 1024
GPT2_SHAPES: dict[str, dict[str, Any]] = {
    "gpt2-124m": {"n_layer": 12, "d_model": 768, "n_head": 12, "n_positions": GPT2_POSITIONS},
    "gpt2-355m": {"n_layer": 24, "d_model": 1024, "n_head": 16, "n_positions": GPT2_POSITIONS},
}
LLAMA_TINY: dict[str, Any] = {"n_layer": 8, "d_model": 512, "n_head": 8, "d_ff": 1376}


def build_gpt2_shape(name: str, cfg: ModelConfig) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    p = cfg.preset  # only `full` defines one: ModelSpec.preset_for refuses other budgets by name
    conf = GPT2Config(vocab_size=cfg.vocab_size, n_positions=p["n_positions"], n_embd=p["d_model"],
                      n_layer=p["n_layer"], n_head=p["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    conf._attn_implementation = "eager"
    return LogitsOnly(GPT2LMHeadModel(conf))


def build_llama_shape(name: str, cfg: ModelConfig) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    p = cfg.preset
    conf = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=p["d_model"], intermediate_size=p["d_ff"],
                       num_hidden_layers=p["n_layer"], num_attention_heads=p["n_head"],
                       num_key_value_heads=p["n_head"], max_position_embeddings=cfg.max_seq_len,
                       tie_word_embeddings=True, attention_dropout=0.0, bos_token_id=0, eos_token_id=0,
                       pad_token_id=None)
    conf._attn_implementation = "eager"
    return LogitsOnly(LlamaForCausalLM(conf))


def _bind(fn: Callable[[str, ModelConfig], nn.Module], name: str) -> Callable[[ModelConfig], nn.Module]:
    def build(cfg: ModelConfig) -> nn.Module:
        return fn(name, cfg)

    build.__name__ = f"build_{name.replace('-', '_')}"
    return build


for _name, _shape_kw in GPT2_SHAPES.items():
    MODELS.add(_name, ModelSpec(
        name=_name, family="gpt2", build=_bind(build_gpt2_shape, _name), default=False,
        presets={"full": dict(_shape_kw)}, max_seq_len=GPT2_POSITIONS, fixed_shape=True,
        notes=f"GPT2LMHeadModel from config with the published {_name[5:].upper()} shape "
              f"({_shape_kw['n_layer']}L/{_shape_kw['d_model']}d/{_shape_kw['n_head']}h, 1024 positions), "
              f"tied head, eager attention, trained from scratch",
    ))

MODELS.add("llama-tiny", ModelSpec(
    name="llama-tiny", family="llama", build=_bind(build_llama_shape, "llama-tiny"), default=False,
    presets={"full": dict(LLAMA_TINY)}, fixed_shape=True,
    notes="LlamaForCausalLM from config, 8L/512d/8h, SwiGLU 1376, 25.3M non-embedding parameters, tied head",
))
