"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Why: summaries, baselines and the ``latest`` link are rewritten while other tools (CI, a browser, a second pytest
process) may read them; a baseline cut in half by a killed job would turn the next CI run into a usage error.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: str | bytes, fsync: bool = True) -> Path:
    """Write ``data`` to a temporary file beside ``path`` (``.<name>.<pid>.tmp``), fsync it, then rename it over
    ``path``: a full disk leaves the previous file (or none), never a truncated or 0-byte one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_symlink(target: str, link: str | os.PathLike) -> Path:
    """Point ``link`` at ``target`` (a relative path is resolved from the link's folder), replacing any old link
    atomically. Where symlinks are not allowed, ``link`` becomes a small text file holding ``target``."""
    link = Path(link)
    tmp = link.parent / f".{link.name}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp, target_is_directory=True)
        if link.is_dir() and not link.is_symlink():
            raise OSError(f"{link} is a real folder")
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        if link.is_dir() and not link.is_symlink():
            raise
        atomic_write(link, target + "\n")
    return link
