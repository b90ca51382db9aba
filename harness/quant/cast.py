"""fp16 / bf16: cast the weights, and decide by trying whether the model can also *compute* in that dtype.

Measured on CPU with torch 2.13 and transformers 5.23 (smoke presets): GPT-2, LLaMA and ResNet-BK run a forward in
both bf16 and fp16; Hugging Face Mamba does not (its CPU path mixes a float32 tensor into a matmul with the cast
weights: "expected m1 and m2 to have the same dtype"). So the method is chosen per model by a probe forward:

- "cast": parameters are stored and computed in the low dtype; logits are upcast to fp32 by a forward hook so
  the loss is computed the same way for every bit width.
- "rounded weights, fp32 compute": if the probe raises, parameters are cast back to fp32. The weights keep their
  fp16/bf16 rounding (the round trip fp32 -> fp16 -> fp32 is exact), so the model measures weight precision
  but not reduced-precision arithmetic; the report says so.

Only parameters are cast; buffers (RoPE frequencies, masks) keep their dtype. Modules a model declares must stay
in higher precision keep fp32 weights and compute in fp32 (a pre-hook upcasts their floating inputs); their
output stays fp32 (e.g. ResNet-BK's potential v reaches BK-Core in fp32).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class CastOutcome:
    compute_dtype: torch.dtype
    notes: list[str] = field(default_factory=list)


def _upcast_inputs(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _logits_to_fp32(module: nn.Module, args: tuple, out):
    return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out


def cast_model(model: nn.Module, dtype: torch.dtype, keep: Mapping[str, nn.Module],
               probe_ids: torch.Tensor) -> CastOutcome:
    """Cast ``model``'s parameters to ``dtype`` in place (except ``keep``), then probe one forward pass."""
    kept_ids = {id(p) for m in keep.values() for p in m.parameters()}
    for p in model.parameters():
        if p.is_floating_point() and id(p) not in kept_ids:
            p.data = p.data.to(dtype)
    for mod in keep.values():
        mod.register_forward_pre_hook(_upcast_inputs)
    model.register_forward_hook(_logits_to_fp32)
    try:
        with torch.no_grad():
            model(probe_ids)
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        for p in model.parameters():
            if p.is_floating_point():
                p.data = p.data.to(torch.float32)
        msg = str(exc).splitlines()[0][:160]
        name = str(dtype).removeprefix("torch.")
        note = f"{name} forward failed on {probe_ids.device} ({msg}); evaluated with {name}-rounded weights in fp32"
        return CastOutcome(torch.float32, [note + " compute"])
    return CastOutcome(dtype, [f"weights and compute in {str(dtype).removeprefix('torch.')}; logits upcast to fp32"])
