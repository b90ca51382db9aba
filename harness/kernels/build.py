"""Lazy build and load of a C++ CPU extension (torch ``cpp_extension``), cached across processes.

Shared by every fused kernel (BK-Core, the selective scan): each describes its sources and flags with a
:class:`LazyExtension`, and this module does the rest the same way for all of them.

An extension is compiled once per machine into ``$LMBENCH_CACHE_DIR/torch_extensions/<subdir>/<torch>-<cpu hash>``
(default cache dir: ``<repo root>/.lmbench-cache``). torch's ``cpp_extension.load`` rebuilds only when the sources
or flags change (it hashes them) and serialises concurrent builds with a file baton in the build directory, so
pytest-xdist workers can all call ``load()``: one compiles, the others wait and then import.
Builds use ``-march=native``, so the directory name includes a hash of the CPU model and flags: a cache shared
between different machines never loads code built for another CPU. A lock older than STALE_LOCK_S (left by a build
that was killed mid-compile, which would otherwise make every later process wait forever) is removed.

If a build fails (no compiler, no ninja, broken toolchain), ``load()`` returns None after a single
``warnings.warn`` naming the reason, and the caller falls back to its pure-PyTorch path.
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

__all__ = ["STALE_LOCK_S", "LazyExtension", "cache_dir"]

STALE_LOCK_S = 900.0  # a build takes ~1 min; a lock this old was left by a killed build


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


def clear_stale_lock(bdir: Path, label: str) -> None:
    """torch's file baton waits forever on a lock left by a killed build (Ctrl-C mid-compile): remove old ones."""
    lock = bdir / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_S:
        warnings.warn(f"{label}: removing a stale build lock {lock} ({age:.0f} s old, left by an interrupted build)",
                      RuntimeWarning, stacklevel=4)
        lock.unlink(missing_ok=True)


def describe_failure(exc: BaseException) -> str:
    """One line naming why a build failed: the first compiler 'error:' line if there is one."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln.lower()]
    return f"{type(exc).__name__}: {(errors or lines or [''])[0][:300]}"


class LazyExtension:
    """One C++ extension: built on the first ``load()`` per process, then cached (module or failure).

    name: the Python module name torch gives the extension (unique per extension).
    sources: the .cpp files. subdir: the folder under ``<cache>/torch_extensions``.
    label: prefix of warnings (``"bk_core"``). fallback: what the warning says happens instead.
    """

    def __init__(self, name: str, sources: list[Path], subdir: str, *, cflags: list[str], ldflags: list[str],
                 label: str, fallback: str) -> None:
        self.name = name
        self.sources = [Path(s) for s in sources]
        self.subdir = subdir
        self.cflags = list(cflags)
        self.ldflags = list(ldflags)
        self.label = label
        self.fallback = fallback
        self._lock = threading.Lock()
        # A dict (not attributes) so that wrappers can expose it as-is (bk_core's tests read ``_state["error"]``).
        self.state: dict[str, object] = {"done": False, "module": None, "error": None}

    def build_directory(self) -> Path:
        """Per-CPU build directory (torch's cache inside it keys on source and flag hashes)."""
        return cache_dir() / "torch_extensions" / self.subdir / f"{torch.__version__.replace('+', '_')}-{_cpu_tag()}"

    def reset(self) -> None:
        """Forget the cached load result (tests use it to simulate a failing build)."""
        with self._lock:
            self.state.update(done=False, module=None, error=None)

    @property
    def error(self) -> str | None:
        """Why the last build failed (None if it did not, or was not tried)."""
        return self.state["error"]  # type: ignore[return-value]

    def load(self, verbose: bool = False) -> ModuleType | None:
        """The compiled module, or None if it cannot be built.

        The first call per process compiles (~30-60 s once per machine) or loads from the cache (~1 s); later calls
        return the cached result. A failure is reported by exactly one ``warnings.warn`` per process.
        """
        with self._lock:
            if self.state["done"]:
                return self.state["module"]  # type: ignore[return-value]
            try:
                from torch.utils import cpp_extension

                bdir = self.build_directory()
                bdir.mkdir(parents=True, exist_ok=True)
                clear_stale_lock(bdir, self.label)
                module = cpp_extension.load(
                    name=self.name,
                    sources=[str(s) for s in self.sources],
                    build_directory=str(bdir),
                    extra_cflags=list(self.cflags),
                    extra_ldflags=list(self.ldflags),
                    verbose=verbose,
                )
                self.state.update(module=module, error=None)
            except Exception as exc:  # noqa: BLE001 - any build failure means "use the fallback"
                self.state.update(module=None, error=describe_failure(exc))
                warnings.warn(
                    f"{self.label}: the C++ CPU kernel could not be built ({self.state['error']}); {self.fallback}",
                    RuntimeWarning,
                    stacklevel=4,
                )
            self.state["done"] = True
            return self.state["module"]  # type: ignore[return-value]
