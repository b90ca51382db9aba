"""Which weights get quantized, which stay in higher precision, and why (every decision has a reason string).

Rules, in order, for each weight tensor (tied tensors are one tensor, decided once):

1. A tensor whose module (or any ancestor module, or the parameter name itself) matches a *keep pattern* stays
   in higher precision. Keep patterns come from (a) the caller (e.g. a ModelSpec's ``keep_high_precision``),
   (b) any module's ``keep_high_precision`` attribute (patterns relative to that module; a sequence of patterns
   or a {pattern: reason} mapping), (c) a Hugging Face model's ``_keep_in_fp32_modules``.
   Patterns are ``fnmatch`` patterns on dotted names (``*`` crosses dots).
2. Output heads (a Linear named ``lm_head``/``head``, or the embedding a module names in its ``tied_head``
   attribute because it reuses the table as the head without a head module, like ResNet-BK) are quantized only
   with include_head; embeddings (``nn.Embedding``) only with include_embeddings. A head tied to an embedding is
   one matrix: it is quantized if either flag is set, and then the embedding lookup sees the quantized values too
   (we never untie: that would store the table twice and no longer be the model that was trained).
3. Every other weight matrix is quantized: ``nn.Linear``, Hugging Face ``Conv1D`` (GPT-2 uses it for all its
   projections, weight stored (in, out); skipping it would leave GPT-2 almost unquantized) and *batched* weights
   a module declares in ``batched_weights`` (parameters of shape (E, in, out) applied as ``x @ w[e]``, e.g. the
   MoE experts of ResNet-BK: they are most of its weights, so leaving them out would make the comparison unfair).
   Each expert is quantized as its own matrix (rows = that expert's output channels).
4. Everything else is not a weight matrix and stays as it is: norms, biases, convolution kernels, scalars, SSM
   parameters (Mamba's A_log, D).

Every matrix is handled in ``nn.Linear`` orientation (rows = output channels, groups along the input dim).
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

try:  # transformers is a core dependency, but keep this module importable without it
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover
    Conv1D = None

HEAD_NAMES = ("lm_head", "head")  # same convention as harness.models.base.count_parameters

KeepSpec = Mapping[str, str] | Sequence[str]


@dataclass
class WeightMatrix:
    """One weight tensor to quantize, with how to view it as (out, in) rows and write rows back.

    kind: "linear" (nn.Linear, (out, in)), "conv1d" (HF Conv1D, (in, out)), "embedding" ((V, D): rows are tokens,
    which is also the orientation of a head tied to it) or "batched" ((E, in, out) -> E*out rows of length in).
    """

    name: str
    module_name: str
    module: nn.Module
    param_name: str
    kind: str
    aliases: tuple[str, ...] = ()
    role: str = "linear"  # "linear" | "head" | "embedding" | "tied head+embedding"

    @property
    def param(self) -> torch.Tensor:
        return getattr(self.module, self.param_name)

    def rows(self) -> torch.Tensor:
        w = self.param.detach()
        if self.kind == "conv1d":
            return w.t()
        if self.kind == "batched":
            return w.transpose(1, 2).reshape(-1, w.shape[1])
        return w

    def write_rows(self, rows: torch.Tensor) -> None:
        """Copy (out, in) rows back into the parameter in place (ties and references stay intact)."""
        w = self.param.data
        if self.kind == "conv1d":
            w.copy_(rows.t())
        elif self.kind == "batched":
            e, d_in, d_out = w.shape
            w.copy_(rows.reshape(e, d_out, d_in).transpose(1, 2))
        else:
            w.copy_(rows)

    @property
    def in_features(self) -> int:
        return self.rows().shape[1]


@dataclass
class Scope:
    """targets: what to quantize. kept: module (or parameter) name -> why it stays in higher precision.
    declared_keeps: the modules kept by a keep pattern (the cast path keeps these in fp32 too)."""

    targets: list[WeightMatrix] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    declared_keeps: dict[str, nn.Module] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _as_mapping(spec: KeepSpec | None, default_reason: str) -> dict[str, str]:
    if not spec:
        return {}
    if isinstance(spec, str):
        return {spec: default_reason}
    if isinstance(spec, Mapping):
        return {str(k): str(v) for k, v in spec.items()}
    return {str(p): default_reason for p in spec}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def keep_patterns(model: nn.Module, extra: KeepSpec | None = None) -> dict[str, str]:
    """All keep patterns as absolute dotted-name patterns -> reason (caller's, modules', Hugging Face's)."""
    patterns = _as_mapping(extra, "kept by the caller (keep_high_precision)")
    for prefix, mod in model.named_modules():
        own = getattr(mod, "keep_high_precision", None)
        where = prefix or "the model"
        for pat, why in _as_mapping(own, f"declared by {type(mod).__name__}").items():
            patterns[_join(prefix, pat)] = f"declared by {where}: {why}"
        hf = getattr(mod, "_keep_in_fp32_modules", None)
        for s in sorted(hf or ()):
            for pat in (_join(prefix, s), _join(prefix, f"*.{s}")):
                patterns[pat] = f"declared by {where}: Hugging Face _keep_in_fp32_modules"
    return patterns


def _keep_reason(module_name: str, param_fqn: str, patterns: Mapping[str, str]) -> str | None:
    parts = module_name.split(".") if module_name else []
    candidates = [".".join(parts[:i]) for i in range(len(parts), 0, -1)] + [param_fqn]
    for pat, why in patterns.items():
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            return why
    return None


def _matrix_candidates(mname: str, mod: nn.Module) -> list[tuple[str, str]]:
    """(param_name, kind) of the weight matrices a module owns directly."""
    if isinstance(mod, nn.Linear):
        return [("weight", "linear")]
    if Conv1D is not None and isinstance(mod, Conv1D):
        return [("weight", "conv1d")]
    if isinstance(mod, nn.Embedding):
        return [("weight", "embedding")]
    batched = getattr(mod, "batched_weights", None) or ()
    out = []
    for pname in batched:
        p = getattr(mod, pname)
        if not isinstance(p, torch.Tensor) or p.dim() != 3:
            raise ValueError(f"{_join(mname, pname)} is declared in batched_weights but is not a 3-D tensor")
        out.append((pname, "batched"))
    return out


def find_scope(model: nn.Module, *, include_embeddings: bool = False, include_head: bool = False,
               keep_high_precision: KeepSpec | None = None) -> Scope:
    """Decide, for every weight tensor of ``model``, whether it is quantized (see the module docstring)."""
    patterns = keep_patterns(model, keep_high_precision)
    names_of: dict[int, list[str]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(pname)

    head_ids: set[int] = set()
    emb_ids: set[int] = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and mname.split(".")[-1] in HEAD_NAMES:
            head_ids.add(id(mod.weight))
        if isinstance(mod, nn.Embedding):
            emb_ids.add(id(mod.weight))
        tied = getattr(mod, "tied_head", None)
        if tied:
            head_ids.add(id(mod.get_submodule(tied).weight))

    scope = Scope()
    seen: set[int] = set()
    handled_modules: set[str] = set()
    for mname, mod in model.named_modules():
        for pname, kind in _matrix_candidates(mname, mod):
            p = getattr(mod, pname)
            handled_modules.add(mname)
            if id(p) in seen:  # the second name of a tied tensor: decided with the first
                continue
            seen.add(id(p))
            fqn = _join(mname, pname)
            aliases = tuple(n for n in names_of.get(id(p), []) if n != fqn)
            is_head, is_emb = id(p) in head_ids, id(p) in emb_ids
            label = mname or fqn
            if aliases:
                label += f" (tied: {', '.join(a.rpartition('.')[0] for a in aliases)})"
            elif is_head and is_emb:
                label += " (tied: output head)"
            why = _keep_reason(mname, fqn, patterns)
            if why is not None:
                scope.kept[label] = why
                scope.declared_keeps[label] = mod
                continue
            if is_head and is_emb:
                role = "tied head+embedding"
                wanted = include_head or include_embeddings
                skip = "embedding tied to the output head (include_embeddings=False, include_head=False)"
            elif is_head:
                role, wanted, skip = "head", include_head, "output head (include_head=False)"
            elif is_emb:
                role, wanted, skip = "embedding", include_embeddings, "embedding (include_embeddings=False)"
            else:
                role, wanted, skip = "linear", True, ""
            if not wanted:
                scope.kept[label] = skip
                continue
            if role == "tied head+embedding":
                also = ", ".join(aliases) if aliases else "the output head (tied_head)"
                scope.notes.append(f"{fqn} is tied to {also}: quantized once, embedding lookups and the head both "
                                   "use the quantized values")
            scope.targets.append(WeightMatrix(fqn, mname, mod, pname, kind, aliases, role))

    # What remains: modules with parameters of their own that hold no weight matrix (norms, convs, scalars).
    for mname, mod in model.named_modules():
        own = [n for n, _ in mod.named_parameters(recurse=False)]
        if not own or mname in handled_modules:
            continue
        cls = type(mod).__name__
        label = mname or "(root)"
        why = _keep_reason(mname, _join(mname, own[0]), patterns)
        if why is not None:
            scope.kept[label] = why
            scope.declared_keeps[label] = mod
        elif "norm" in cls.lower():
            scope.kept[label] = f"norm ({cls}): never quantized"
        else:
            scope.kept[label] = f"not a weight matrix ({cls}: {', '.join(own)})"
    if scope.targets:
        scope.notes.append("biases stay fp32 (counted as fp32 parameters)")
    return scope
