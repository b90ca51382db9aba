"""The plugin parametrizes the benchmark axes from the options, unless a test pins an axis itself."""


def test_axes_come_from_options_unless_pinned(pytester, monkeypatch):
    monkeypatch.delenv("LMBENCH_DATA_DIR", raising=False)  # a relative path would not resolve from pytester's folder
    pytester.makepyfile(
        """
        import pytest

        def test_free(model_name, dataset_name, seed):
            assert model_name in ("transformer", "llama") and dataset_name == "synthetic-markov"

        @pytest.mark.parametrize("seed", [7])
        def test_pinned(model_name, seed):
            assert seed == 7

        @pytest.mark.parametrize("seed_offset", [0, 1])
        def test_similar_name_is_not_a_pin(seed, seed_offset):
            assert seed in (0, 1)
        """
    )
    result = pytester.runpytest_subprocess(
        "--models", "transformer,llama", "--seeds", "0,1", "-q",
        "--results-dir", str(pytester.path / "r"),
    )
    result.assert_outcomes(passed=4 + 2 + 4)
