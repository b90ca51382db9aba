"""Lazy build and load of the BK-Core C++ CPU extension (csrc/bk_core.cpp), cached across processes.

The extension is compiled once per machine into ``$LMBENCH_CACHE_DIR/torch_extensions/bk_core/<torch>-<cpu hash>``
(default cache dir: ``<repo root>/.lmbench-cache``). torch's ``cpp_extension.load`` rebuilds only when the sources
or flags change (it hashes them) and serialises concurrent builds with a file baton in the build directory, so
pytest-xdist workers can all call :func:`load_extension`: one compiles, the others wait and then import.
The build uses ``-march=native``, so the directory name includes a hash of the CPU model and flags: a cache shared
between different machines never loads code built for another CPU. A lock older than STALE_LOCK_S (left by a build
that was killed mid-compile, which would otherwise make every later process wait forever) is removed.

If the build fails (no compiler, no ninja, broken toolchain), :func:`load_extension` returns None after a single
``warnings.warn`` naming the reason, and the op falls back to the pure-PyTorch kernels (torch_scan.py).
"""
from __future__ import annotations

import hashlib
import os
import platform
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["load_extension", "cache_dir", "build_directory", "extension_available", "reset"]

_SRC = Path(__file__).resolve().parent / "csrc" / "bk_core.cpp"
_NAME = "lmbench_bk_core"
# -ffp-contract=off: vector and scalar code must round identically (the chunked fix-up compares bits).
# -fopenmp: at::parallel_for is inlined from ATen headers and is serial unless the extension itself uses OpenMP.
_CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]

_lock = threading.Lock()
_state: dict[str, object] = {"done": False, "module": None, "error": None}


def _repo_root() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() and (parent / "harness").is_dir():
            return parent
    return None


def cache_dir() -> Path:
    """``$LMBENCH_CACHE_DIR``, else ``<repo root>/.lmbench-cache`` (``./.lmbench-cache`` outside a checkout)."""
    env = os.environ.get("LMBENCH_CACHE_DIR")
    if env:
        return Path(env)
    root = _repo_root()
    return (root if root is not None else Path.cwd()) / ".lmbench-cache"


def _cpu_tag() -> str:
    info = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("model name", "flags", "Features")):
                    info += line
                if line.strip() == "":
                    break
    except OSError:
        pass
    return hashlib.sha1(info.encode()).hexdigest()[:12]


def build_directory() -> Path:
    """Per-CPU build directory for the extension (torch's cache inside it keys on source and flag hashes)."""
    return cache_dir() / "torch_extensions" / "bk_core" / f"{torch.__version__.replace('+', '_')}-{_cpu_tag()}"


def reset() -> None:
    """Forget the cached load result (tests use it to simulate a failing build)."""
    with _lock:
        _state.update(done=False, module=None, error=None)


STALE_LOCK_S = 900.0  # a build takes ~1 min; a lock this old was left by a killed build


def _clear_stale_lock(bdir: Path) -> None:
    """torch's file baton waits forever on a lock left by a killed build (Ctrl-C mid-compile): remove old ones."""
    lock = bdir / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_S:
        warnings.warn(f"bk_core: removing a stale build lock {lock} ({age:.0f} s old, left by an interrupted build)",
                      RuntimeWarning, stacklevel=4)
        lock.unlink(missing_ok=True)


def _describe(exc: BaseException) -> str:
    """One line naming why the build failed: the first compiler 'error:' line if there is one."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln.lower()]
    return f"{type(exc).__name__}: {(errors or lines or [''])[0][:300]}"


def load_extension(verbose: bool = False) -> ModuleType | None:
    """The compiled module (functions ``forward`` and ``backward``), or None if it cannot be built.

    The first call per process compiles (~30-60 s once per machine) or loads from the cache (~1 s); later calls
    return the cached result. A failure is reported by exactly one ``warnings.warn`` per process.
    """
    with _lock:
        if _state["done"]:
            return _state["module"]  # type: ignore[return-value]
        try:
            from torch.utils import cpp_extension

            bdir = build_directory()
            bdir.mkdir(parents=True, exist_ok=True)
            _clear_stale_lock(bdir)
            module = cpp_extension.load(
                name=_NAME,
                sources=[str(_SRC)],
                build_directory=str(bdir),
                extra_cflags=list(_CFLAGS),
                extra_ldflags=list(_LDFLAGS),
                verbose=verbose,
            )
            _state.update(module=module, error=None)
        except Exception as exc:  # noqa: BLE001 - any build failure means "use the fallback"
            _state.update(module=None, error=_describe(exc))
            warnings.warn(
                f"bk_core: the C++ CPU kernel could not be built ({_state['error']}); "
                "falling back to the pure-PyTorch chunked kernels (correct, but much slower).",
                RuntimeWarning,
                stacklevel=3,
            )
        _state["done"] = True
        return _state["module"]  # type: ignore[return-value]


def extension_available() -> bool:
    """True when the C++ kernel is (or can be) loaded; triggers the build on first call."""
    return load_extension() is not None
