import pytest

from harness.models import MODELS, default_model_names, get_model_spec
from harness.registry import Registry, UnknownNameError


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as exc:
        MODELS.get("nosuchmodel")
    msg = str(exc.value)
    assert "nosuchmodel" in msg and "transformer" in msg and "llama" in msg and "mamba" in msg


def test_validate_reports_every_bad_name():
    with pytest.raises(UnknownNameError, match="'a, b'"):
        MODELS.validate(["transformer", "a", "b"])


def test_duplicate_registration_is_an_error():
    r: Registry[int] = Registry("thing")
    r.add("x", 1)
    with pytest.raises(ValueError, match="twice"):
        r.add("x", 2)


def test_patterns_and_decorator():
    r: Registry[str] = Registry("tokenizer", allow_import_strings=False)

    @r.register("plain")
    def plain():
        return "p"

    r.add_pattern("bpe-<V>", lambda V: f"bpe{V}")
    assert r.get("plain") is plain
    assert r.get("bpe-512") == "bpe512"
    assert "bpe-<V>" in r.names()
    with pytest.raises(UnknownNameError, match="bpe-<V>"):
        r.get("bpe-x")


def test_import_string_model():
    spec = get_model_spec("tests.toys:causal_spec")
    assert spec.name == "toy-causal"
    builder = get_model_spec("tests.toys:build_causal")  # a bare builder becomes a (causal) spec
    assert builder.causal and not builder.default
    with pytest.raises(UnknownNameError, match="cannot import"):
        get_model_spec("tests.toys:nothing_here")


def test_default_set_has_no_leaky_models():
    names = default_model_names()
    assert {"transformer", "llama", "mamba"} <= set(names)
    assert all(get_model_spec(n).causal for n in names)
