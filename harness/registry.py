"""Named registries for models, datasets and tokenizers.

Why a registry: benchmarks are parametrized by *names* given on the command line, so every name must be
checked before anything runs, and users must be able to add entries without editing lmbench (a decorator
in their own module, or an import string ``pkg.module:factory`` given directly on the command line).
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """An unknown registry name; the message lists the valid names (it is shown to users as is)."""


@dataclass(frozen=True)
class _Pattern(Generic[T]):
    template: str  # e.g. "bpe-<V>", shown to users
    regex: re.Pattern
    factory: Callable[..., T]  # called with the named groups as keyword arguments (strings)


class Registry(Generic[T]):
    """A name -> entry mapping with decorator registration, templated names and import strings."""

    def __init__(self, kind: str, *, allow_import_strings: bool = True) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._patterns: list[_Pattern[T]] = []
        self._allow_import = allow_import_strings

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@MODELS.register("mine")`` above a factory or spec-producing object."""

        def deco(entry: T) -> T:
            return self.add(name, entry)

        return deco

    def add_pattern(self, template: str, factory: Callable[..., T]) -> None:
        """Register a templated name such as ``bpe-<V>``: ``<V>`` matches ``[0-9]+`` and is passed as V=..."""
        parts = re.split(r"(<\w+>)", template)
        rx = "".join(f"(?P<{p[1:-1]}>[0-9]+)" if p.startswith("<") else re.escape(p) for p in parts)
        self._patterns.append(_Pattern(template, re.compile(f"^{rx}$"), factory))

    def names(self) -> list[str]:
        """Every valid name as shown to users: registered names, then templates such as ``bpe-<V>``."""
        return sorted(self._entries) + [p.template for p in self._patterns]

    def names_registered(self) -> list[str]:
        """The concretely registered names (no templates, no import strings), sorted."""
        return sorted(self._entries)

    def entries(self) -> dict[str, T]:
        """The registered name -> entry mapping, sorted by name (a copy)."""
        return {name: self._entries[name] for name in sorted(self._entries)}

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except UnknownNameError:
            return False
        return True

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        for pat in self._patterns:
            m = pat.regex.match(name)
            if m:
                return pat.factory(**m.groupdict())
        if self._allow_import and ":" in name and not name.startswith(("text:",)):
            return self._import(name)
        raise UnknownNameError(self._unknown_message(name))

    def validate(self, names: Iterable[str]) -> list[str]:
        """Check every name up front; raise one UnknownNameError naming all bad names and the valid ones."""
        names = list(names)
        bad = [n for n in names if n not in self]
        if bad:
            raise UnknownNameError(self._unknown_message(", ".join(bad)))
        return names

    def _unknown_message(self, shown: str) -> str:
        valid = ", ".join(self.names())
        extra = " or an import string pkg.module:attr" if self._allow_import else ""
        return f"unknown {self.kind} {shown!r}; valid {self.kind}s: {valid}{extra}"

    def _import(self, spec: str) -> T:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
            obj = getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise UnknownNameError(
                f"cannot import {self.kind} {spec!r} ({exc}); valid {self.kind}s: {', '.join(self.names())}"
            ) from exc
        return obj
