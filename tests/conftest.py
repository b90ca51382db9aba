"""Fixtures shared by the tests: pytester (in-process runs isolated), a private data cache, the real WikiText-2."""
import os
import signal

import pytest
import torch

from harness.data import load_corpus
from harness.data.base import Corpus, DataContext
from tests.helpers import DATA_DIR

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> DataContext:
    return DataContext(data_dir=DATA_DIR, cache_dir=tmp_path_factory.mktemp("cache"), allow_hub=False)


@pytest.fixture(scope="module")
def wikitext2(ctx) -> Corpus:
    if not (DATA_DIR / "wikitext-2-v1-tokenized" / "train.txt").is_file():
        pytest.skip(f"real data not found: {DATA_DIR / 'wikitext-2-v1-tokenized'} (set LMBENCH_DATA_DIR)")
    return load_corpus("wikitext-2", ctx)


# Imported before any in-process run: pytester drops modules first imported during a run, and C extensions
# (numpy.fft under scipy, safetensors, tokenizers) cannot be imported twice in one process. The first optimizer
# imports torch._dynamo, which registers torch._inductor's test operators: a second registration is an error.
_PRELOAD = ("harness.pytest_plugin", "harness.session", "harness.measure.perplexity", "harness.reporting.summary",
            "scipy.stats", "safetensors.torch", "filelock", "tqdm.auto", "datasets", "tokenizers", "tests.toys",
            "torch._dynamo", "torch._inductor.test_operators", "matplotlib.pyplot", "allure", "pytest_html.extras")


@pytest.fixture(scope="session")
def _preloaded():
    """Session-scoped, so it runs before pytester takes its first sys.modules snapshot."""
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)


@pytest.fixture
def inproc(_preloaded, pytester, tmp_path):
    """``pytester`` for in-process runs of the lmbench plugin: the run's environment changes (cache dir, offline
    switches) and its SIGTERM handler are undone afterwards; results and caches go to private folders."""
    env, handler = dict(os.environ), signal.getsignal(signal.SIGTERM)
    os.environ.pop("PYTEST_XDIST_WORKER", None)
    os.environ["LMBENCH_DATA_DIR"] = str(DATA_DIR.resolve())
    os.environ["LMBENCH_CACHE_DIR"] = str(tmp_path / "cache")
    pytester.results = tmp_path / "results"
    yield pytester
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the module (and for subprocesses it starts, which inherit the count): on a shared
    2-core machine two OpenMP threads wait for each other at every small op, orders of magnitude slower; timing
    ratios and memory probes need one steady thread, as subprocess bench runs get (``bench_env``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
