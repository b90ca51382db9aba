"""Lazy build and load of the Mamba C++ CPU extension (csrc/: selective scan, causal conv), cached across processes.

Uses the shared builder (harness/kernels/build.py, the same one BK-Core uses): built once per machine into
``$LMBENCH_CACHE_DIR/torch_extensions/selective_scan/<torch>-<cpu hash>``. If the build fails,
:func:`load_extension` returns None after a single warning, and callers fall back to mamba.py's parallel scan.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

from harness.kernels.build import LazyExtension

__all__ = ["build_directory", "build_error", "build_status", "load_extension", "reset"]

_CSRC = Path(__file__).resolve().parent / "csrc"
_SOURCES = [_CSRC / "bindings.cpp", _CSRC / "selective_scan.cpp", _CSRC / "causal_conv1d.cpp"]
# -ffp-contract=fast: FMAs in the recurrence (unlike BK-Core, nothing here compares bits between code paths).
# -fopenmp: at::parallel_for is serial unless the extension itself uses OpenMP; it also enables `omp simd`.
# -mprefer-vector-width=512: on AVX-512 CPUs the scan runs one 16-float register per block (~6% faster than 2x256).
_CFLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffp-contract=fast", "-fno-math-errno",
           "-fno-trapping-math", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]

_EXT = LazyExtension(
    "lmbench_selective_scan", _SOURCES, "selective_scan", cflags=_CFLAGS, ldflags=_LDFLAGS, label="selective_scan",
    fallback="Mamba falls back to mamba.py's parallel scan (pure PyTorch: correct, but much slower).",
)


def build_directory() -> Path:
    """Per-CPU build directory for the extension."""
    return _EXT.build_directory()


def reset() -> None:
    """Forget the cached load result (tests use it to simulate a failing build)."""
    _EXT.reset()


def build_error() -> str | None:
    """Why the build failed, or None."""
    return _EXT.error


def build_status() -> str:
    """'untried' (no load attempted in this process), 'built' (loaded) or 'failed'; never triggers a build."""
    if not _EXT.state["done"]:
        return "untried"
    return "built" if _EXT.state["module"] is not None else "failed"


def load_extension(verbose: bool = False) -> ModuleType | None:
    """The compiled module (``forward``, ``backward``, ``conv_forward``, ``conv_backward``), or None if it cannot be built (warns once per process)."""
    return _EXT.load(verbose)
