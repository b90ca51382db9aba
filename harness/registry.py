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
        """Check every name up front; raise one UnknownNameError naming all bad names and the valid ones.

        A name the registry recognises but refuses (an import string whose module fails to import, ``bpe-<V>`` out
        of range) keeps its own reason: the generic "unknown name" line would hide the fix."""
        names = list(names)
        unknown, specific = [], []
        for name in names:
            try:
                self.get(name)
            except UnknownNameError as exc:
                if str(exc) == self._unknown_message(name):
                    unknown.append(name)
                else:
                    specific.append(str(exc))
        if unknown:
            specific.append(self._unknown_message(", ".join(unknown)))
        if specific:
            raise UnknownNameError("; ".join(specific))
        return names

    def _unknown_message(self, shown: str) -> str:
        valid = ", ".join(self.names())
        extra = " or an import string pkg.module:attr" if self._allow_import else ""
        return f"unknown {self.kind} {shown!r}; valid {self.kind}s: {valid}{extra}"

    def _import(self, spec: str) -> T:
        """``pkg.module:attr``. Whatever importing the user's module raises (a syntax error, an exception at import
        time, ``sys.exit``) is reported as one line with the module's own exception, never a traceback."""
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise UnknownNameError(f"{self.kind} {spec!r}: an import string needs a module and an attribute, "
                                   f"pkg.module:attr")
        try:
            module = importlib.import_module(module_name)
        except (Exception, SystemExit) as exc:
            raise UnknownNameError(f"cannot import {self.kind} {spec!r}: importing {module_name} raised "
                                   f"{_one_line(exc)}") from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise UnknownNameError(f"cannot import {self.kind} {spec!r}: module {module_name} has no attribute "
                                   f"{attr!r}") from None


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (a SyntaxError keeps its file and line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
