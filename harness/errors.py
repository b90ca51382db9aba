"""Errors a user causes and fixes, found while a benchmark runs (data, a model): one line each, never a traceback.

Why a family of their own: a bad option is found before anything runs (``OptionsError``, a usage error), but some
inputs can only be judged once they are loaded or built — a text file that is not UTF-8, a split shorter than one
training window, a model whose logits are not ``(batch, length, vocab)``. Those fail the cell they belong to, and the
pytest plugin shows an ``InputError`` as its message alone (the record's reason is the same line).
"""
from __future__ import annotations


class InputError(ValueError):
    """A bad input found at run time; the message is one line naming the file or model and the fix."""


class DataError(InputError):
    """A dataset's files are present but unusable (not UTF-8, NUL bytes, a split too short)."""


class ModelContractError(InputError):
    """A model breaks the contract every benchmark relies on: ids ``(B, T)`` → float logits ``(B, T, vocab)``,
    built by ``builder(ModelConfig)`` as an ``nn.Module`` with trainable parameters."""
