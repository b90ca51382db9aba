"""One entry point for the bits axis: ``quantize_model(module, bits) -> QuantReport``.

The module is modified **in place** (the caller hands over a private copy of trained weights) and the report
says what was done. Integer widths are weight-only round-to-nearest:

- int8: per output channel, symmetric (zero point 0), full range [-128, 127] without clipping.
- int4 / int3 / int2: groups of ``group_size`` input weights per output channel (default 128 for int4, 32 for
  int3/int2), asymmetric with an integer zero point per group. Why asymmetric: at 2-3 bits a level is precious
  and weight groups are not centred, so fitting [min, max] loses less; 0 stays exact; the zero point costs
  only ``bits`` bits per group. Measured on a 512x256 N(0, 1) matrix, groups of 32, RMS error: int4 0.081
  asymmetric vs 0.092 for our symmetric mapping and 0.095 for torchao's default SYMMETRIC; int3 0.173 vs
  0.206 / 0.203; int2 0.407 vs 0.590 / 0.472. Why not torchao's default: see rtn.py (not idempotent).

nn.Linear layers go through torchao where it is installed (``IntxWeightOnlyConfig``, same math as ours, tested
equal); HF Conv1D layers are converted to equivalent nn.Linear for that. Everything torchao cannot take goes
through our quantize-dequantize path (dequantized fp32 weights written in place): batched expert weights,
embeddings and tied heads (torchao would replace the parameter and silently untie it), and rows whose length is
not a multiple of the group size (a ragged last group). Both paths compute in fp32 on dequantized weights.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from harness.quant import torchao_path
from harness.quant.cast import cast_model
from harness.quant.report import DTYPE_LABELS, QuantReport, matrix_bytes, tensor_label
from harness.quant.rtn import QuantizedMatrix, fake_quantize_activations, quantize
from harness.quant.scope import Conv1D, KeepSpec, Scope, WeightMatrix, find_scope

BITS = ("fp32", "fp16", "bf16", "int8", "int4", "int3", "int2")
DEFAULT_GROUP_SIZE: dict[int, int | None] = {8: None, 4: 128, 3: 32, 2: 32}
RTN = "lmbench-rtn"
_CAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def quantize_model(module: nn.Module, bits: str, *, group_size: int | None = None, act_bits: int | None = None,
                   include_embeddings: bool = False, include_head: bool = False, prefer_torchao: bool = True,
                   keep_high_precision: KeepSpec | None = None, probe_ids: torch.Tensor | None = None) -> QuantReport:
    """Quantize ``module`` in place to ``bits`` (one of BITS) and report what happened.

    group_size: int4/3/2 group length (None: the defaults above); for int8, None means per channel.
    act_bits: 8 adds dynamic per-token int8 activation quantization (integer widths only).
    keep_high_precision: extra patterns (e.g. a ModelSpec's ``keep_high_precision``) on top of what the model's
    modules declare. probe_ids: ids for the fp16/bf16 probe forward (default zeros of shape (1, 8)).
    """
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits!r}")
    if act_bits not in (None, 8):
        raise ValueError(f"act_bits must be None or 8, got {act_bits!r}")
    if act_bits and not bits.startswith("int"):
        raise ValueError(f"act_bits applies to integer widths, not {bits}")
    scope = find_scope(module, include_embeddings=include_embeddings, include_head=include_head,
                       keep_high_precision=keep_high_precision)
    if bits == "fp32":
        report = QuantReport(bits=bits, path="none", notes=["weights untouched"])
        _account_others(report, module, exclude=set())
        return report
    if bits in _CAST:
        return _cast(module, bits, scope, probe_ids)
    return _integer(module, int(bits[3:]), scope, group_size, act_bits, prefer_torchao, probe_ids)


def _unique_params(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(model.named_parameters())  # named_parameters() already drops tied duplicates


def _account_others(report: QuantReport, model: nn.Module, exclude: set[int],
                    stored_as: tuple[str, int] | None = None, native: set[int] | None = None) -> None:
    """Add every parameter not in ``exclude`` (by id) to the counts and the size, at its own dtype, or at
    ``stored_as`` = (label, bytes per element) for floating parameters not in ``native``."""
    hp = 0
    for _, p in _unique_params(model):
        if id(p) in exclude:
            continue
        if stored_as is not None and p.is_floating_point() and id(p) not in (native or set()):
            label, nbytes = stored_as
        else:
            label, nbytes = tensor_label(p), p.element_size()
        report.params_by_width[label] = report.params_by_width.get(label, 0) + p.numel()
        hp += p.numel() * nbytes
    report.size_breakdown["high_precision"] = report.size_breakdown.get("high_precision", 0) + hp
    report.packed_bytes += hp


def _cast(module: nn.Module, bits: str, scope: Scope, probe_ids: torch.Tensor | None) -> QuantReport:
    dtype = _CAST[bits]
    outcome = cast_model(module, dtype, scope.declared_keeps, _probe(module, probe_ids))
    kept = {name: why for name, why in scope.kept.items() if name in scope.declared_keeps}
    report = QuantReport(bits=bits, path="cast", kept=kept, compute_dtype=DTYPE_LABELS[outcome.compute_dtype],
                         notes=list(outcome.notes))
    if kept:
        report.notes.append("modules declared high-precision keep fp32 weights and compute in fp32")
    if outcome.compute_dtype == dtype:
        _account_others(report, module, exclude=set())
    else:  # fp32 compute on rounded weights: they carry `bits` precision and would be stored at 2 bytes
        native = {id(p) for m in scope.declared_keeps.values() for p in m.parameters()}
        _account_others(report, module, exclude=set(), stored_as=(bits, 2), native=native)
    return report


def _torchao_ok(t: WeightMatrix, g: int | None) -> str | None:
    """None if torchao can take this matrix, else the reason it goes through our path."""
    if t.kind not in ("linear", "conv1d") or t.role == "tied head+embedding":
        return {"batched": "batched expert weights", "embedding": "embedding / tied head (kept tied)"}.get(
            t.kind, "tied head (kept tied)")
    if g is not None and t.in_features % g:
        return "in_features not a multiple of the group size"
    return None


def _conv1d_to_linear(model: nn.Module, t: WeightMatrix) -> None:
    """Swap an HF Conv1D (y = x @ W + b, W (in, out)) for the equivalent nn.Linear so torchao can take it."""
    conv = t.module
    w = conv.weight.detach()
    lin = nn.Linear(w.shape[0], w.shape[1], bias=conv.bias is not None, device=w.device, dtype=w.dtype)
    lin.weight = nn.Parameter(w.t().contiguous(), requires_grad=conv.weight.requires_grad)
    if conv.bias is not None:
        lin.bias = conv.bias
    parent_name, _, child = t.module_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, lin)


def _act_hook(module: nn.Module, args: tuple) -> tuple:
    return (fake_quantize_activations(args[0]),) + tuple(args[1:])


def _integer(model: nn.Module, nbits: int, scope: Scope, group_size: int | None, act_bits: int | None,
             prefer_torchao: bool, probe_ids: torch.Tensor | None) -> QuantReport:
    symmetric = nbits == 8
    g = group_size if group_size is not None else DEFAULT_GROUP_SIZE[nbits]
    ao_version = torchao_path.torchao_version()
    report = QuantReport(bits=f"int{nbits}", path=RTN, group_size=g, act_bits=act_bits,
                         mapping="symmetric" if symmetric else "asymmetric", kept=dict(scope.kept),
                         torchao_version=ao_version, notes=list(scope.notes))
    if ao_version is None:
        report.notes.append("torchao not installed (optional extra [quant]): lmbench-rtn for every matrix")
    elif not prefer_torchao:
        report.notes.append("prefer_torchao=False: lmbench-rtn for every matrix")
    use_ao = ao_version is not None and prefer_torchao
    _account_others(report, model, exclude={id(t.param) for t in scope.targets})  # before any module is swapped

    ao_groups: dict[int | None, list[WeightMatrix]] = {}  # torchao takes one group size per call
    rtn_targets: list[tuple[WeightMatrix, int | None]] = []
    rtn_reasons: Counter[str] = Counter()
    for t in scope.targets:
        g_eff = None if g is None else min(g, t.in_features)
        why_not = _torchao_ok(t, g_eff) if use_ao else "torchao unused"
        if why_not is None:
            ao_groups.setdefault(g_eff, []).append(t)
        else:
            rtn_targets.append((t, g_eff))
            rtn_reasons[why_not] += 1
    quantized = _run_rtn(model, rtn_targets, nbits, symmetric, act_bits, report)
    if ao_groups:
        quantized.update(_run_torchao(model, ao_groups, nbits, symmetric, act_bits, probe_ids, report))
    if use_ao and rtn_reasons:
        report.notes.append("lmbench-rtn (same math as torchao) for: " +
                            ", ".join(f"{n} x {why}" for why, n in sorted(rtn_reasons.items())))
    if act_bits:
        report.notes.append("dynamic int8 per-token asymmetric activation quantization on the inputs of quantized "
                            "layers (hooks fire only when a layer is called as a module)")
        if any(t.kind == "batched" for t in scope.targets):
            report.notes.append("batched expert weights: activations quantized at the owning module's input only "
                                "(the second expert matmul's input is not)")

    paths = sorted(set(report.module_paths.values()), key=lambda p: (p == RTN, p))
    report.path = "+".join(paths) if paths else "none"
    report.quantized = [t.name for t in scope.targets]
    for t in scope.targets:
        q = quantized[t.name]
        report.params_by_width[report.bits] = report.params_by_width.get(report.bits, 0) + q.codes.numel()
        for part, n in matrix_bytes(q).items():
            report.size_breakdown[part] = report.size_breakdown.get(part, 0) + n
            report.packed_bytes += n
    return report


def _run_rtn(model: nn.Module, targets: list[tuple[WeightMatrix, int | None]], nbits: int, symmetric: bool,
             act_bits: int | None, report: QuantReport) -> dict[str, QuantizedMatrix]:
    """Our path: quantize, write the dequantized weights back in place, hook activation quantization."""
    out: dict[str, QuantizedMatrix] = {}
    hooked: set[int] = set()
    for t, g_eff in targets:
        q = quantize(t.rows(), nbits, g_eff, symmetric=symmetric)
        t.write_rows(q.dequantize().to(t.param.dtype))
        out[t.name] = q
        report.module_paths[t.name] = RTN
        for mod in _act_modules(model, t) if act_bits else ():
            if id(mod) not in hooked:
                hooked.add(id(mod))
                mod.register_forward_pre_hook(_act_hook)
    return out


def _run_torchao(model: nn.Module, groups: dict[int | None, list[WeightMatrix]], nbits: int, symmetric: bool,
                 act_bits: int | None, probe_ids: torch.Tensor | None,
                 report: QuantReport) -> dict[str, QuantizedMatrix]:
    out: dict[str, QuantizedMatrix] = {}
    name = f"torchao:{torchao_path.config_name(act_bits)}"
    for g_eff, targets in groups.items():
        for t in targets:
            if t.kind == "conv1d":
                _conv1d_to_linear(model, t)
        got = torchao_path.quantize_linears(model, [t.module_name for t in targets], nbits, g_eff,
                                            symmetric=symmetric, act_bits=act_bits)
        for t in targets:
            out[t.name] = got[t.module_name]
            report.module_paths[t.name] = name
    if any(t.kind == "conv1d" for ts in groups.values() for t in ts):
        report.notes.append("HF Conv1D layers were replaced by equivalent nn.Linear (weight transposed) for torchao")
    _probe_torchao(model, [t for ts in groups.values() for t in ts], probe_ids, act_bits, report)
    return out


def _probe_torchao(model: nn.Module, targets: list[WeightMatrix], probe_ids: torch.Tensor | None,
                   act_bits: int | None, report: QuantReport) -> None:
    """torchao's tensors only support the ops of a module call (F.linear); a model that uses a weight directly
    (HF Mamba's CPU path computes ``dt_proj.weight @ x``) fails. Then keep torchao's codes but store them
    dequantized as plain fp32 weights: the same numbers torchao's own linear computes with."""
    try:
        with torch.no_grad():
            model(_probe(model, probe_ids))
        return
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        msg = str(exc).splitlines()[0][:120]
    for t in targets:
        mod = model.get_submodule(t.module_name)
        mod.weight = nn.Parameter(mod.weight.dequantize(), requires_grad=False)
        if act_bits:
            mod.register_forward_pre_hook(_act_hook)
    report.notes.append(f"torchao weight tensors failed in the probe forward ({msg}); torchao's codes kept, "
                        "stored dequantized as fp32 weights (same values torchao computes with)")


def _probe(model: nn.Module, probe_ids: torch.Tensor | None) -> torch.Tensor:
    if probe_ids is not None:
        return probe_ids
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.zeros((1, 8), dtype=torch.long, device=device)


def _act_modules(model: nn.Module, t: WeightMatrix) -> list[nn.Module]:
    """Modules whose input is the activation multiplied by ``t`` (none for a pure embedding lookup)."""
    if t.kind in ("linear", "conv1d", "batched"):
        return [t.module]
    mods = []
    for alias in t.aliases:  # a tied head: the Linear that shares the embedding's weight
        mod = model.get_submodule(alias.rpartition(".")[0])
        if isinstance(mod, nn.Linear) or (Conv1D is not None and isinstance(mod, Conv1D)):
            mods.append(mod)
    return mods
