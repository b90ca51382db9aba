"""What a measurement returns. Measurements never write records, never assert targets, never call pytest:
they return a ``Result``, and ``harness.results.finalize`` turns a cell plus its result into a record and a verdict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Status hints a measurement may give; the finaliser decides what each means for the test outcome.
HINTS = ("leak", "diverged", "oom", "timeout", "nonfinite", "impossible")


@dataclass
class Result:
    metrics: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)  # how the numbers were measured
    status: str | None = None  # a hint from HINTS, or None when the measurement itself went fine
    reason: str | None = None  # the one line that explains a hint
    leak: bool | None = None  # the causality guard's verdict, where it ran
    artefacts: dict[str, str] = field(default_factory=dict)  # name -> path (plots, per-example files)
    notes: str | None = None
    subject: str | None = None  # what was measured when the cell has no model (e.g. "bk-core-causal")
    target_section: str | None = None  # the targets-file section to apply (default: the cell's dataset)

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in HINTS:
            raise ValueError(f"unknown status hint {self.status!r}; valid: {', '.join(HINTS)}")
