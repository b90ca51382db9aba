"""Lazy build and load of the BK-Core C++ CPU extension (csrc/bk_core.cpp), cached across processes.

The build, cache, stale-lock and fallback logic is shared with the other fused kernels (harness/kernels/build.py);
this module only names BK-Core's source and flags. The extension lands in
``$LMBENCH_CACHE_DIR/torch_extensions/bk_core/<torch>-<cpu hash>``. If the build fails, :func:`load_extension`
returns None after a single ``warnings.warn`` naming the reason, and the op falls back to the pure-PyTorch kernels
(torch_scan.py).
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

from harness.kernels.build import (
    STALE_LOCK_S,
    LazyExtension,
    cache_dir,
    clear_stale_lock,
)

__all__ = ["STALE_LOCK_S", "build_directory", "cache_dir", "extension_available", "load_extension", "reset"]

_SRC = Path(__file__).resolve().parent / "csrc" / "bk_core.cpp"
# -ffp-contract=off: vector and scalar code must round identically (the chunked fix-up compares bits).
# -fopenmp: at::parallel_for is inlined from ATen headers and is serial unless the extension itself uses OpenMP.
_CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]

_EXT = LazyExtension(
    "lmbench_bk_core", [_SRC], "bk_core", cflags=_CFLAGS, ldflags=_LDFLAGS, label="bk_core",
    fallback="falling back to the pure-PyTorch chunked kernels (correct, but much slower).",
)
_state = _EXT.state  # the same dict: {"done", "module", "error"}


def build_directory() -> Path:
    """Per-CPU build directory for the extension (torch's cache inside it keys on source and flag hashes)."""
    return _EXT.build_directory()


def reset() -> None:
    """Forget the cached load result (tests use it to simulate a failing build)."""
    _EXT.reset()


def _clear_stale_lock(bdir: Path) -> None:
    clear_stale_lock(bdir, "bk_core")


def load_extension(verbose: bool = False) -> ModuleType | None:
    """The compiled module (functions ``forward`` and ``backward``), or None if it cannot be built.

    The first call per process compiles (~30-60 s once per machine) or loads from the cache (~1 s); later calls
    return the cached result. A failure is reported by exactly one ``warnings.warn`` per process.
    """
    return _EXT.load(verbose)


def extension_available() -> bool:
    """True when the C++ kernel is (or can be) loaded; triggers the build on first call."""
    return load_extension() is not None
