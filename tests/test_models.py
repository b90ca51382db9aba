import pytest
import torch

from harness.models import BUDGETS, MODELS, count_parameters, get_model_spec

BUILTIN = ["transformer", "llama", "mamba"] + (["resnet-bk"] if "resnet-bk" in MODELS else [])


@pytest.mark.parametrize("budget", BUDGETS)
def test_presets_match_in_non_embedding_parameters(budget):
    counts = {}
    for name in BUILTIN:
        spec = get_model_spec(name)
        counts[name] = count_parameters(spec.build(spec.config(256, 128, budget)))["non_embedding"]
    ref = counts["transformer"]
    for name, n in counts.items():
        assert abs(n - ref) / ref <= 0.10, f"{budget}: {name} has {n} non-embedding parameters vs transformer {ref}"


@pytest.mark.parametrize("name", BUILTIN)
def test_models_map_ids_to_logits(name):
    spec = get_model_spec(name)
    model = spec.build(spec.config(50, 32, "smoke")).eval()
    out = model(torch.randint(0, 50, (2, 17)))
    assert out.shape == (2, 17, 50) and torch.isfinite(out).all()


def test_tied_head_counts_once():
    spec = get_model_spec("transformer")
    m = spec.build(spec.config(1000, 64, "smoke"))
    c = count_parameters(m)
    assert c["total"] - c["non_embedding"] == 1000 * 64 + 64 * 64  # token table + position table
