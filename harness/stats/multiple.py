"""Corrections for testing a family of hypotheses at once (Holm–Bonferroni, Bonferroni).

Why Holm: a run compares many models on many cells; at α = 0.05 one in twenty true nulls comes out "significant" by
chance. Holm's step-down controls the family-wise error rate exactly as Bonferroni does and is uniformly more
powerful, in ten lines, so no statsmodels dependency.
"""
from __future__ import annotations

from typing import Sequence


def bonferroni(pvalues: Sequence[float | None]) -> list[float | None]:
    """p · m, capped at 1 (m = the number of p-values that are not None; None stays None: no test was possible)."""
    m = sum(p is not None for p in pvalues)
    return [None if p is None else min(1.0, p * m) for p in pvalues]


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in the input order: with the m p-values sorted ascending,
    adjusted_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)). Reject H_(i) at level α iff adjusted_(i) ≤ α."""
    order = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(order)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out
