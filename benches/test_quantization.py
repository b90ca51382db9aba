"""Quantization robustness: the same trained weights at fp32, fp16, bf16, int8, int4, int3, int2 (docs/quantization.md).

Each bit width is its own cell on a private copy of the cell's trained fp32 weights (trained once, shared by every
width); the measurement scores it on the perplexity protocol and records scope, path and packed size; targets per
width are in ``fixtures/targets/quantization.toml``.
"""
import pytest

from harness.measure import quantization
from harness.quant import BITS


@pytest.mark.quantization
@pytest.mark.axes("model", "dataset", "seed", "bits", default_bits=list(BITS),
                  options=("group_size", "act_bits", "quant_include"))
def test_quantization(cell, provision, bench, lmbench):
    bench.finalize(quantization.measure(
        provision(cell), group_size=lmbench.group_size, act_bits=lmbench.act_bits,
        include_embeddings="embeddings" in lmbench.quant_include, include_head="head" in lmbench.quant_include))
