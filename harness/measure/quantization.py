"""The quantization measurement: the same trained weights at another precision, on the perplexity protocol.

Why against the same weights: "int4 PPL ~45 vs 182" means nothing unless both numbers come from one trained model
scored one way. The fp32 copy is guarded and scored first (once per weights and protocol in a process), then the
private copy is quantized in place (``harness.quant``) and scored again with the identical protocol; degradation is
the relative change of perplexity. Size is the real packed size (codes at their width plus scales and zero points
plus what stayed in higher precision); inference speed is timed with ``torch.utils.benchmark``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from harness.measure import perplexity
from harness.measure.result import Result

if TYPE_CHECKING:
    from harness.provision import Provisioned

_FP32: dict[tuple, Result] = {}  # (weights key, eval protocol) -> the fp32 result, once per process


def fp32_reference(pm: "Provisioned") -> Result:
    """Guard and score the unquantized weights (memoised: every bit width of a cell compares with one number)."""
    key = (pm.weights_key, tuple(sorted(pm.eval_cfg.to_dict().items())), pm.cell.dataset, pm.cell.tokenizer)
    if key not in _FP32:
        _FP32[key] = perplexity.measure(pm)
    return _FP32[key]


def inference_speed(module: torch.nn.Module, ids: torch.Tensor, min_run_time: float = 0.5) -> dict[str, float]:
    """Tokens/s of a forward pass over ``ids`` (B, T): ``torch.utils.benchmark.Timer.blocked_autorange``, median
    and interquartile range of its blocks (recorded, never asserted: a busy machine is slower, not wrong)."""
    from torch.utils.benchmark import Timer

    with torch.no_grad():
        module(ids)  # warm-up (first-call allocations, lazy kernels)
        m = Timer(stmt="module(ids)", globals={"module": module, "ids": ids}, num_threads=torch.get_num_threads()
                  ).blocked_autorange(min_run_time=min_run_time)
    n = ids.numel()
    return {"inference_tokens_per_s": n / m.median, "inference_tokens_per_s_iqr": n * m.iqr / m.median ** 2,
            "inference_s_per_batch": m.median, "inference_repeats": float(len(m.times) * m.number_per_run)}


def measure(pm: "Provisioned", *, group_size: int | None = None, act_bits: int | None = None,
            include_embeddings: bool = False, include_head: bool = False) -> Result:
    """Quantize ``pm.module`` in place to ``pm.cell.bits`` and score it like the fp32 weights."""
    from harness.quant import quantize_model

    base = fp32_reference(pm)
    if base.status is not None:  # diverged or leaky weights: nothing to quantize honestly
        return base
    bits = pm.cell.bits or "fp32"
    keep = getattr(pm.spec, "keep_high_precision", None) or None
    report = quantize_model(pm.module, bits, group_size=group_size, act_bits=act_bits,
                            include_embeddings=include_embeddings, include_head=include_head, keep_high_precision=keep)
    result = perplexity.measure(pm, guard=False) if bits != "fp32" else base
    protocol = dict(result.protocol) | {"quantization": report.to_dict(), "reference": "the same trained weights "
                                        "in fp32, scored with this protocol (fp32_ppl)"}
    if result.status is not None:
        return Result(metrics=dict(result.metrics), protocol=protocol, status=result.status, reason=result.reason)
    fp32_ppl = base.metrics["ppl"]
    window = pm.eval_cfg.window or pm.train_cfg.seq_len
    ids = torch.as_tensor(pm.ids("test")[: pm.eval_cfg.batch_size * window].reshape(-1, window),
                          dtype=torch.long, device=pm.device)
    with torch.no_grad():
        finite = bool(torch.isfinite(pm.module(ids[:1]).float()).all())
    metrics: dict[str, Any] = dict(result.metrics) | {
        "fp32_ppl": fp32_ppl,
        "degradation_pct": 100.0 * (result.metrics["ppl"] / fp32_ppl - 1.0),
        "packed_bytes": float(report.packed_bytes),
        "packed_mb": report.packed_bytes / 1e6,
        "outputs_finite": float(finite),
        # what share of the parameters is stored below fp32: an "int4" result that quantized nothing is no result
        "quantized_fraction": sum(n for w, n in report.params_by_width.items() if w != "fp32")
                              / max(1, sum(report.params_by_width.values())),
    } | inference_speed(pm.module, ids)
    status, reason = (None, None)
    if not finite or not math.isfinite(metrics["ppl"]):
        status, reason = "nonfinite", f"{bits}: outputs are not finite (ppl {metrics['ppl']})"
    return Result(metrics=metrics, protocol=protocol, status=status, reason=reason, leak=base.leak,
                  target_section=bits, notes="; ".join(report.notes) or None)
