"""Run ``pytest benches`` in a subprocess, as a user would, with an isolated results and cache folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Real data for tests: $LMBENCH_DATA_DIR, else ../shared/data beside the checkout.
# Resolved once, at import (from the cwd the tests were started in): pytester and subprocesses change the cwd.
DATA_DIR = Path(os.environ.get("LMBENCH_DATA_DIR") or REPO.parent / "shared" / "data").resolve()
TOY = "tests.toys:causal_spec"


def bench_cmd(results: Path, cache: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "benches", "-q", "-p", "no:cacheprovider",
            "--results-dir", str(results), "--cache-dir", str(cache), *args]


def run_benches(results: Path, cache: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(bench_cmd(results, cache, *args), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=bench_env())


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LMBENCH_DATA_DIR"] = str(DATA_DIR.resolve())  # a relative path would not survive another cwd
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    # One thread: toy models gain nothing from more, and OpenMP threads spinning against a parallel test run
    # (pytest -n 2 on 2 cores) slow small kernels down by orders of magnitude.
    env["OMP_NUM_THREADS"] = "1"
    return env
