"""The on-disk weight cache: safetensors weights + the training log, keyed by what determines the weights.

Why the key hashes code, not a version constant: a hand-bumped constant is forgotten, and then a changed model
silently reuses stale weights. The key hashes the training config, the data fingerprint, and the *source* of the
model's builder module (plus any modules its spec lists in ``code``) and of the training loop.

Why a file lock: two xdist workers (or Ray tasks on a shared filesystem) that need the same weights must train
them once; the second waits on ``<key>.lock`` and then loads what the first saved.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import os
from contextlib import contextmanager
from dataclasses import asdict
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
    def lock(self, key: str) -> Iterator[None]:
        """Hold ``<key>.lock`` across processes: whoever holds it trains or loads; others wait, then load."""
        from filelock import FileLock

        self.dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.dir / f"{key}.lock")):
            yield

    def load(self, model: nn.Module, key: str) -> TrainResult | None:
        """Load weights and training log for ``key`` into ``model``; None if absent or unreadable (retrain)."""
        from safetensors.torch import load_model

        wpath, mpath = self.paths(key)
        if not (wpath.exists() and mpath.exists()):
            return None
        try:
            meta = json.loads(mpath.read_text())
            result = TrainResult(**meta)
            load_model(model, str(wpath))
        except Exception:  # a corrupt or foreign entry is retrained, not trusted
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
        save_model(model, str(tmp_w))
        meta = asdict(result)
        meta["cached"] = False
        tmp_m.write_text(json.dumps(meta))
        os.replace(tmp_w, wpath)
        os.replace(tmp_m, mpath)
