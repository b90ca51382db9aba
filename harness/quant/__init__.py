"""Weight quantization for the bits axis: round-to-nearest integer widths (torchao where it fits, our own path
elsewhere), fp16/bf16 casts, an explicit scope and the real packed size. See docs/quantization.md."""
from harness.quant.apply import BITS, DEFAULT_GROUP_SIZE, quantize_model
from harness.quant.report import QuantReport

__all__ = ["BITS", "DEFAULT_GROUP_SIZE", "QuantReport", "quantize_model"]
