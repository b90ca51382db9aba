"""What a quantization did, as data: the record a benchmark stores next to its perplexity.

Size is the packed size a deployment would store, in bytes:

    sum over quantized matrices of  ceil(n_codes * bits / 8)                  (packed codes)
                                  + 4 * n_groups                              (fp32 scales)
                                  + ceil(n_groups * bits / 8)  if asymmetric  (zero points, packed at `bits`)
  + sum over every other parameter of  numel * bytes_per_element(dtype)       (what stayed fp32/fp16/bf16)

Tied tensors count once. Buffers (RoPE tables, masks) are not weights and are not counted.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from harness.quant.packing import pack_codes
from harness.quant.rtn import QuantizedMatrix

DTYPE_LABELS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}


@dataclass
class QuantReport:
    """bits: the bits-axis value ("fp32", "bf16", "int4", ...). path: what quantized the weights ("none", "cast",
    "torchao:IntxWeightOnlyConfig", "lmbench-rtn", or "A+B" when different matrices took different paths; see
    module_paths). quantized: names of the quantized weight tensors. kept: module name -> why it stayed in higher
    precision. params_by_width: unique parameter counts per storage width. packed_bytes: the packed model size
    (formula in this module's docstring), split in size_breakdown. compute_dtype: the dtype matmuls run in."""

    bits: str
    path: str
    group_size: int | None = None
    act_bits: int | None = None
    mapping: str | None = None
    quantized: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    params_by_width: dict[str, int] = field(default_factory=dict)
    packed_bytes: int = 0
    size_breakdown: dict[str, int] = field(default_factory=dict)
    module_paths: dict[str, str] = field(default_factory=dict)
    compute_dtype: str = "fp32"
    torchao_version: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matrix_bytes(q: QuantizedMatrix) -> dict[str, int]:
    """Packed bytes of one quantized matrix: codes, scales (fp32) and zero points (packed at q.bits)."""
    return {
        "codes": int(pack_codes(q.codes, q.bits).size),
        "scales": int(q.scales.numel() * q.scales.element_size()),
        "zero_points": 0 if q.zero_points is None else int(pack_codes(q.zero_points, q.bits).size),
    }


def tensor_label(t: torch.Tensor) -> str:
    return DTYPE_LABELS.get(t.dtype, str(t.dtype).replace("torch.", ""))
