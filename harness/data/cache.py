"""Small helpers shared by the data modules: default locations, content hashes, atomic cache writes and the
"Hugging Face Hub off unless --hub" switch.

Nothing here imports ``datasets`` or ``tokenizers`` at module level, so ``import harness.data`` stays cheap.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from harness.data.base import Corpus, DataContext
from harness.env import REPO_ROOT

DATA_DIR_ENV = "LMBENCH_DATA_DIR"
CACHE_DIR_ENV = "LMBENCH_CACHE_DIR"


def default_data_dir() -> Path | None:
    """``$LMBENCH_DATA_DIR`` if set, else ``../shared/data`` beside the checkout if it exists, else None."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def default_cache_dir() -> Path:
    """``$LMBENCH_CACHE_DIR`` if set, else ``<repo>/.lmbench-cache`` (git-ignored)."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / ".lmbench-cache"


def default_context(allow_hub: bool = False) -> DataContext:
    return DataContext(data_dir=default_data_dir(), cache_dir=default_cache_dir(), allow_hub=allow_hub)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def short_hash(*parts: object, n: int = 16) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:n]


def split_hash(corpus: Corpus, split: str) -> str:
    """sha256 of a split's text, memoised on the corpus object (a private attribute, not in ``meta``, so reports
    that dump ``meta`` never see it); recomputed if the split's text object is replaced."""
    memo = corpus.__dict__.setdefault("_lmbench_sha256", {})
    text = corpus.splits[split]
    hit = memo.get(split)
    if hit is not None and hit[0] is text:
        return hit[1]
    digest = sha256_text(text)
    memo[split] = (text, digest)
    return digest


def safe_name(name: str) -> str:
    """A file-name-safe rendering of a corpus/tokenizer name (``text:/a/b`` -> ``text_a_b``)."""
    out = "".join(c if c.isalnum() or c in "-._" else "_" for c in name)
    return out.strip("_")[:60] or "x"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    from harness.files import atomic_write

    atomic_write(path, data, fsync=False)  # a cache entry is rebuilt if lost: no fsync


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def hub_mode(allow_hub: bool) -> Iterator[None]:
    """Run a ``datasets``/``huggingface_hub`` call with the Hub switched off unless ``allow_hub``.

    ``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE`` are read at import time by those libraries, so besides the
    environment variables (for subprocesses) the live config constants are patched for the duration and then
    restored. Progress bars are silenced as well (benchmark output stays clean).
    """
    import datasets
    import datasets.config as dcfg
    import huggingface_hub.constants as hcfg

    saved_env = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    saved = (dcfg.HF_HUB_OFFLINE, getattr(dcfg, "HF_DATASETS_OFFLINE", None), hcfg.HF_HUB_OFFLINE)
    bars = datasets.is_progress_bar_enabled()
    offline = not allow_hub
    if offline:
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
        dcfg.HF_HUB_OFFLINE = True
        if hasattr(dcfg, "HF_DATASETS_OFFLINE"):
            dcfg.HF_DATASETS_OFFLINE = True
        hcfg.HF_HUB_OFFLINE = True
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if bars:
            datasets.enable_progress_bars()
        if offline:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            dcfg.HF_HUB_OFFLINE = saved[0]
            if hasattr(dcfg, "HF_DATASETS_OFFLINE"):
                dcfg.HF_DATASETS_OFFLINE = saved[1]
            hcfg.HF_HUB_OFFLINE = saved[2]
