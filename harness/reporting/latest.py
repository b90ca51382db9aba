"""``reports/results/latest``: a link to the newest run's folder, replaced atomically at the end of every run that
writes under the default results root (a small text file holding the run id where symlinks are not allowed)."""
from __future__ import annotations

from pathlib import Path

from harness.files import atomic_symlink

LATEST = "latest"


def point_latest(results_root: Path, results_dir: Path) -> Path | None:
    """Point ``<results_root>/latest`` at ``results_dir`` when the run wrote there (a relative link, so the
    repository can move); runs with their own ``--results-dir`` elsewhere leave it alone."""
    results_root, results_dir = Path(results_root).resolve(), Path(results_dir).resolve()
    if results_dir.parent != results_root or not results_dir.is_dir():
        return None
    return atomic_symlink(results_dir.name, results_root / LATEST)
