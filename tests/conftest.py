"""Fixtures shared by the tests: pytester, a private data cache and the real WikiText-2 corpus."""
import pytest

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
