"""Number formatting shared by every renderer, so the terminal, ``summary.md`` and ``summary.html`` agree."""
from __future__ import annotations

import math
from typing import Any

from harness.stats import SeedStats
from harness.stats.paired import fmt_p

__all__ = ["fmt_ci", "fmt_num", "fmt_p", "fmt_pct", "fmt_stat"]


def fmt_num(v: Any, digits: int = 4) -> str:
    """Four significant digits; thousands separated above 10^4; '' for None."""
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if v != 0 and abs(v) >= 10_000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def fmt_stat(s: SeedStats | None) -> str:
    """``mean ± half-width of the 95% t-interval (n = k)``; one seed: ``value (n = 1)``, no interval claimed."""
    if s is None:
        return ""
    if s.half_width is None:
        return f"{fmt_num(s.mean)} (n = 1)"
    return f"{fmt_num(s.mean)} ± {fmt_num(s.half_width, 2)} (n = {s.n})"


def fmt_ci(ci: tuple[float, float] | list[float] | None) -> str:
    if not ci:
        return ""
    return f"[{fmt_num(ci[0])}, {fmt_num(ci[1])}]"


def fmt_pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1%}"
