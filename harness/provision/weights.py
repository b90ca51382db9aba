"""The on-disk weight cache: safetensors weights + the training log, keyed by what determines the weights.

Why the key hashes code, not a version constant: a hand-bumped constant is forgotten, and then a changed model
silently reuses stale weights. The key hashes the training config, the data fingerprint, and the *source* of the
model's builder module (plus any modules its spec lists in ``code``) and of the training loop.

Why a file lock: two xdist workers (or Ray tasks on a shared filesystem) that need the same weights must train
them once; the second waits on ``<key>.lock`` and then loads what the first saved.

Why a cache that cannot be written is not an error: training is the expensive part of a measurement. A read-only or
full cache loses the lock and the saved copy (``save`` raises ``OSError``; the provisioner measures the trained
model anyway and the record says the weights were not cached), never the training run.

Why the cache folder must be trusted (``untrusted_reason``): it holds weights lmbench loads and, under
``torch_extensions/``, compiled kernels it imports into the process. Anyone who can write there can make lmbench run
their code or report their numbers, so a world-writable folder, or one owned by another user, is refused.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import inspect
import json
import os
import stat
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from harness.provision.training import TrainResult

_CODE_SUFFIXES = (".py", ".cpp", ".cu", ".h")


def _source_files(obj: Any) -> list[Path]:
    """Files whose content defines ``obj``: its module file, or every source file of a package."""
    module = importlib.import_module(obj) if isinstance(obj, str) else inspect.getmodule(obj)
    if module is None or getattr(module, "__file__", None) is None:
        return []
    path = Path(module.__file__)
    if path.name == "__init__.py":
        return sorted(p for p in path.parent.rglob("*") if p.suffix in _CODE_SUFFIXES and p.is_file())
    return [path]


@functools.lru_cache(maxsize=None)
def _files_digest(paths: tuple[Path, ...]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def code_fingerprint(build: Any, extra_modules: tuple[str, ...] = ()) -> str:
    """Hash of the source that determines trained weights: the builder's module, ``extra_modules`` and the loop."""
    target = build.func if isinstance(build, functools.partial) else build
    if not (inspect.isfunction(target) or inspect.isclass(target) or inspect.ismethod(target)):
        target = type(target)  # a callable instance: its class defines it
    files: list[Path] = _source_files(target)
    for name in extra_modules:
        files += _source_files(name)
    files += _source_files("harness.provision.training")
    return _files_digest(tuple(dict.fromkeys(files)))


class WeightCache:
    """``<cache_dir>/weights/<key>.safetensors`` + ``<key>.json`` (the training log), written atomically."""

    def __init__(self, cache_dir: Path) -> None:
        self.dir = Path(cache_dir) / "weights"

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.dir / f"{key}.safetensors", self.dir / f"{key}.json"

    @contextmanager
    def lock(self, key: str) -> Iterator[str | None]:
        """Hold ``<key>.lock`` across processes: whoever holds it trains or loads; others wait, then load.

        Yields None, or why no lock could be taken (a read-only or full cache, a path through a file): then the
        caller goes on without one — at worst two processes train the same weights."""
        from filelock import FileLock

        lock, problem = None, None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.dir / f"{key}.lock"))
            lock.acquire()
        except OSError as exc:
            lock, problem = None, f"{self.dir}: {exc.strerror or exc}"
        try:
            yield problem
        finally:
            if lock is not None:
                lock.release()

    def load(self, model: nn.Module, key: str) -> TrainResult | None:
        """Load weights and training log for ``key`` into ``model``; None if absent or unreadable (retrain)."""
        from safetensors.torch import load_model

        wpath, mpath = self.paths(key)
        if not (wpath.exists() and mpath.exists()):
            return None
        try:
            result = train_result_from(json.loads(mpath.read_text()))
            load_model(model, str(wpath))
        except Exception:  # a corrupt, foreign or wrongly shaped entry is retrained, not trusted
            return None
        result.cached = True
        model.eval()
        return result

    def save(self, model: nn.Module, result: TrainResult, key: str) -> None:
        """Atomic write (temp file + rename) so a concurrent reader never sees half a file."""
        from safetensors.torch import save_model

        wpath, mpath = self.paths(key)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp_w = wpath.with_name(f"{wpath.name}.{os.getpid()}.tmp")
        tmp_m = mpath.with_name(f"{mpath.name}.{os.getpid()}.tmp")
        try:
            save_model(model, str(tmp_w))
            meta = asdict(result)
            meta["cached"] = False
            tmp_m.write_text(json.dumps(meta))
            os.replace(tmp_w, wpath)
            os.replace(tmp_m, mpath)
        except BaseException:  # a full disk: no half-written temp files left behind
            for tmp in (tmp_w, tmp_m):
                with contextlib.suppress(OSError):
                    tmp.unlink()
            raise


_TRAIN_FIELDS = {f.name: f for f in fields(TrainResult)}


def train_result_from(meta: object) -> TrainResult:
    """A ``TrainResult`` from a cache entry's metadata, refusing anything of another shape (``{}``, ``null``, an
    unknown key, a wrong type): such an entry is retrained instead of breaking every later run."""
    if not isinstance(meta, dict):
        raise ValueError(f"training log is {type(meta).__name__}, not an object")
    unknown = set(meta) - set(_TRAIN_FIELDS)
    required = {"steps", "tokens"}
    if unknown or not required <= set(meta):
        raise ValueError(f"training log keys {sorted(meta)} do not match TrainResult")
    number = (int, float)
    checks = {"steps": int, "tokens": int, "losses": list, "grad_norms": list, "diverged": bool,
              "diverged_step": (int, type(None)), "wall_s": number, "cached": bool}
    for key, value in meta.items():
        kind = checks.get(key)
        if kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise ValueError(f"training log field {key} is {type(value).__name__}")
    for key in ("losses", "grad_norms"):
        if not all(isinstance(v, number) or v is None for v in meta.get(key, [])):
            raise ValueError(f"training log field {key} holds non-numbers")
    return TrainResult(**meta)


def untrusted_reason(folder: Path) -> str | None:
    """None if ``folder`` is absent or safe to load weights and compiled code from; else why not (one line).

    Refused: world-writable (the sticky bit does not help: others could still add files under names lmbench will
    look for), or owned by another user than the one running lmbench."""
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{folder} cannot be inspected: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        return None  # nothing can be loaded from it: an unusable cache, measured without caching (not a risk)
    if st.st_mode & stat.S_IWOTH:
        return (f"{folder} is world-writable (mode {stat.S_IMODE(st.st_mode):04o}): anyone on this machine could "
                f"plant weights or a compiled kernel that lmbench would load and run; run chmod o-w {folder} or "
                f"choose another --cache-dir")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return (f"{folder} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()}): its owner could plant "
                f"weights or a compiled kernel that lmbench would load and run; use a cache folder you own "
                f"(--cache-dir)")
    return None
