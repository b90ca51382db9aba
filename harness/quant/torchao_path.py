"""torchao as the quantizer for ``nn.Linear`` layers, where it is installed and where its configs fit.

What runs on CPU (measured with torch 2.13 + torchao 0.18): ``IntxWeightOnlyConfig`` for int8/int4/int3/int2 with
``PerGroup(g)`` or ``PerAxis(0)``, and ``Int8DynamicActivationIntxWeightConfig`` (int8 per-token asymmetric
activations). ``Int4WeightOnlyConfig`` needs a CUDA/mslk kernel ("Requires mslk >= 1.0.0" on CPU), so it is not
used. ``Int8WeightOnlyConfig`` works but only offers torchao's default symmetric mapping, which is not idempotent
(see rtn.py), so int8 also goes through ``IntxWeightOnlyConfig`` with our mapping.
torchao's tensors hold the codes unpacked, one int8 per code; the size we report packs them (packing.py).
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from harness.quant.rtn import QuantizedMatrix

_INT_DTYPES = {8: "int8", 4: "int4", 3: "int3", 2: "int2"}


def torchao_version() -> str | None:
    """The installed torchao version, or None when torchao (or the API used here) is unavailable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao
            from torchao.quantization import IntxWeightOnlyConfig, quantize_  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a torchao built for another torch failing at import
        return None
    return getattr(torchao, "__version__", "unknown")


def config_name(act_bits: int | None) -> str:
    return "Int8DynamicActivationIntxWeightConfig" if act_bits else "IntxWeightOnlyConfig"


def make_config(bits: int, group_size: int | None, *, symmetric: bool, act_bits: int | None) -> Any:
    """The torchao config that reproduces rtn.quantize(bits, group_size, symmetric) on a Linear weight."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_primitives import MappingType

    dtype = getattr(torch, _INT_DTYPES[bits])
    granularity = PerAxis(0) if group_size is None else PerGroup(group_size)
    mapping = MappingType.SYMMETRIC_NO_CLIPPING_ERR if symmetric else MappingType.ASYMMETRIC
    if act_bits:
        if act_bits != 8:
            raise ValueError(f"only act_bits=8 is supported, got {act_bits}")
        return Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=granularity,
                                                     weight_mapping_type=mapping)
    return IntxWeightOnlyConfig(weight_dtype=dtype, granularity=granularity, mapping_type=mapping)


def quantize_linears(model: nn.Module, fqns: list[str], bits: int, group_size: int | None, *, symmetric: bool,
                     act_bits: int | None) -> dict[str, QuantizedMatrix]:
    """Run torchao's ``quantize_`` on the named Linear modules (one group size); return the codes it chose."""
    from torchao.quantization import quantize_

    if not fqns:
        return {}
    wanted = set(fqns)
    config = make_config(bits, group_size, symmetric=symmetric, act_bits=act_bits)
    quantize_(model, config, filter_fn=lambda mod, fqn: fqn in wanted)
    out = {}
    for fqn in fqns:
        w = model.get_submodule(fqn).weight
        if not hasattr(w, "qdata"):
            raise RuntimeError(f"torchao left {fqn}.weight unquantized ({type(w).__name__})")
        rows, cols = w.qdata.shape
        g = cols if group_size is None else group_size
        out[fqn] = QuantizedMatrix(
            codes=w.qdata.detach().clone(),
            scales=w.scale.detach().reshape(rows, -1).to(torch.float32).clone(),
            zero_points=None if symmetric else w.zero_point.detach().reshape(rows, -1).to(torch.int8).clone(),
            bits=bits,
            group_size=g,
        )
    return out
