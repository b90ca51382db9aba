"""FLOPs per token with ``torch.utils.flop_counter.FlopCounterMode``, plus formulas for the ops it misses.

Why the library counter and not hand-written formulas per model: it sees what actually runs (a model that takes a
different path at another length, an attention kernel chosen at run time), for any model. Its convention, which
every record states: matrix products, convolutions and attention kernels are counted (2 FLOPs per multiply-add);
elementwise torch ops (norms, activations, softmax, the optimizer) are not. lmbench's own fused ops register their
real per-element counts (``harness/kernels``: BK-Core, Mamba's CPU selective scan and causal conv1d), so on CPU a
Mamba's count includes its scan; where those ops do not run (Hugging Face's pure-PyTorch Mamba path on CUDA) the
scan is elementwise torch work and is not counted.

What it misses and we register here: CPU ``scaled_dot_product_attention`` dispatches to
``aten._scaled_dot_product_flash_attention_for_cpu`` (and its backward), which torch counts as 0 FLOPs; we count it
with torch's own SDPA formulas (the same ones it uses for the CUDA kernels). The BK-Core op registers its own
formula in ``harness/kernels/bk_core/op.py``.

What it miscounts and we correct: the weight gradient of a *grouped* convolution (torch 2.13's
``conv_backward_flop`` ignores ``groups``), which made the backward of Mamba's depthwise causal conv 128x too large
at d_inner = 128. The weight gradient of a convolution costs what its forward costs; we count it so for groups > 1
and leave torch's formula in charge otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils import flop_counter as _fc
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
    shape_wrapper,
)

CONVENTION = ("torch.utils.flop_counter.FlopCounterMode: matmuls, convolutions and attention kernels (2 FLOPs per "
              "multiply-add, full score matrix even when causal), and lmbench's fused CPU ops (BK-Core, Mamba's "
              "selective scan and causal conv1d) with their own per-element formulas; elementwise torch ops, "
              "softmax, norms and the optimizer are not counted")


def _register_cpu_sdpa() -> None:
    fwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    if fwd in flop_registry:  # registered already (module reloaded, or a later torch counts it itself)
        return

    @register_flop_formula(fwd)
    def _cpu_sdpa_fwd(query, key, value, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
        return sdpa_flop_count(query, key, value)

    if bwd not in flop_registry:

        @register_flop_formula(bwd)
        def _cpu_sdpa_bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
            return sdpa_backward_flop_count(grad_out, query, key, value)


def _correct_grouped_conv_backward() -> None:
    op = torch.ops.aten.convolution_backward
    current = flop_registry.get(op)
    if current is None or getattr(current, "_lmbench_grouped_fix", False):
        return
    original = getattr(_fc.conv_backward_flop, "__wrapped__", None)
    if original is None:  # torch changed its internals: keep its formula rather than guess
        return

    def conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,  # noqa: ANN001
                           output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
        if groups == 1 or not output_mask[1]:
            return original(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                            output_padding, groups, output_mask, out_shape=out_shape, **kwargs)
        grad_input = original(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                              output_padding, groups, [output_mask[0], False, False], out_shape=out_shape, **kwargs)
        # the weight gradient: one multiply-add per (weight, output position) pair, as in the forward
        grad_weight = _fc.conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
        return grad_input + grad_weight

    wrapped = shape_wrapper(conv_backward_flop)
    wrapped._lmbench_grouped_fix = True
    flop_registry[op] = wrapped


_register_cpu_sdpa()
_correct_grouped_conv_backward()


@dataclass
class FlopCount:
    """FLOPs of one forward (and backward) pass over ``tokens`` tokens, per op."""

    tokens: int
    forward: int
    backward: int
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def forward_per_token(self) -> float:
        return self.forward / self.tokens

    @property
    def backward_per_token(self) -> float:
        return self.backward / self.tokens

    @property
    def train_per_token(self) -> float:
        """Forward + backward: the FLOPs of one training step per token (the optimizer is elementwise)."""
        return (self.forward + self.backward) / self.tokens

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "forward": self.forward, "backward": self.backward,
                "forward_per_token": self.forward_per_token, "backward_per_token": self.backward_per_token,
                "by_op": dict(self.by_op), "convention": CONVENTION}


def _by_op(mode: FlopCounterMode) -> dict[str, int]:
    return {str(op): int(n) for op, n in mode.get_flop_counts().get("Global", {}).items()}


def count_flops(model: nn.Module, ids: torch.Tensor, backward: bool = True,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> FlopCount:
    """Count the FLOPs of ``model(ids)`` and, with ``backward``, of the backward pass of the training loss.

    Runs the model for real (once each way) on whatever device ``ids`` is on; parameters' gradients are cleared
    afterwards so the caller's model is left as it was (the model's train/eval mode is not changed)."""
    loss_fn = loss_fn or _next_token_loss
    with torch.no_grad(), FlopCounterMode(display=False) as fwd_mode:
        model(ids)
    fwd = int(fwd_mode.get_total_flops())
    by_op = {f"forward/{k}": v for k, v in _by_op(fwd_mode).items()}
    bwd = 0
    if backward:
        logits = model(ids)  # outside the counter: only the backward pass is counted below
        loss = loss_fn(logits, ids)
        with FlopCounterMode(display=False) as bwd_mode:
            loss.backward()
        bwd = int(bwd_mode.get_total_flops())
        by_op |= {f"backward/{k}": v for k, v in _by_op(bwd_mode).items()}
        for p in model.parameters():
            p.grad = None
    return FlopCount(tokens=int(ids.numel()), forward=fwd, backward=bwd, by_op=by_op)


def _next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1))


def gpt2_analytic_forward_flops_per_token(d_model: int, n_layer: int, vocab_size: int, seq_len: int) -> float:
    """Forward FLOPs per token of a GPT-2 block stack with a tied head, from its shape alone (no module involved).

    2·N: every weight matrix does one multiply-add per token — per block the QKV (3d²), output (d²) and MLP (2·4d²)
    projections, 12·d² in all, plus the V·d head. Attention: per layer each token's query meets ``seq_len`` keys
    (2·T·d) and weights ``seq_len`` values (2·T·d); eager attention computes the whole T×T score matrix, causal
    mask or not. Biases, norms, softmax and GELU are elementwise and not counted (the counter's convention)."""
    n_matmul = n_layer * 12 * d_model * d_model + vocab_size * d_model
    return 2.0 * n_matmul + 4.0 * n_layer * seq_len * d_model
