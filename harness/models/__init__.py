"""The model registry. Built-in families register themselves on import of their module.

Add a model from your own code::

    from harness.models import MODELS, ModelSpec
    MODELS.add("mine", ModelSpec(name="mine", build=my_builder, presets={"smoke": {...}}))

or pass ``--models pkg.module:attr`` where ``attr`` is a ``ModelSpec`` or a builder ``f(ModelConfig) -> nn.Module``
(a bare builder is assumed causal; the causality guard checks that claim before any perplexity is trusted).
"""
from __future__ import annotations

from harness.models.base import (
    BUDGETS,
    LogitsOnly,
    ModelConfig,
    ModelSpec,
    ModelUnavailable,
    PresetError,
    count_parameters,
)
from harness.registry import Registry, UnknownNameError


class ModelRegistry(Registry[ModelSpec]):
    """``Registry`` plus ``hf:PATH`` names: a local Hugging Face checkpoint, evaluated without training."""

    HF_TEMPLATE = "hf:PATH"

    def get(self, name: str) -> ModelSpec:
        if name.startswith("hf:"):
            from harness.models.pretrained import pretrained_spec

            return pretrained_spec(name)
        return super().get(name)

    def names(self) -> list[str]:
        return super().names() + [self.HF_TEMPLATE]


MODELS: ModelRegistry = ModelRegistry("model")


def get_model_spec(name: str) -> ModelSpec:
    entry = MODELS.get(name)
    if isinstance(entry, ModelSpec):
        return entry
    if callable(entry):
        return ModelSpec(name=name, build=entry, causal=True, default=False, notes="user builder (import string)")
    raise UnknownNameError(f"{name!r} is neither a ModelSpec nor a builder callable")


def default_model_names() -> list[str]:
    return [n for n, spec in MODELS.entries().items() if isinstance(spec, ModelSpec) and spec.default]


# Built-in families (import order = registration order; each module calls MODELS.add).
from harness.models import bdh as _bdh  # noqa: E402,F401
from harness.models import hf as _hf  # noqa: E402,F401
from harness.models import psann as _psann  # noqa: E402,F401  (registers always; psannlm imported only to build)
from harness.models import standard as _standard  # noqa: E402,F401

try:  # ResNet-BK needs the BK-Core kernel package; keep the registry usable while it is absent.
    from harness.models import resnet_bk as _resnet_bk  # noqa: E402,F401
except ImportError as _exc:  # pragma: no cover - only when the kernel package is missing
    import warnings

    warnings.warn(f"ResNet-BK models unavailable: {_exc}", stacklevel=1)

__all__ = [
    "BUDGETS",
    "MODELS",
    "LogitsOnly",
    "ModelConfig",
    "ModelSpec",
    "ModelUnavailable",
    "PresetError",
    "count_parameters",
    "default_model_names",
    "get_model_spec",
]
