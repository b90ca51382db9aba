"""BDH, PSANN-LM, the fixed published shapes and ``hf:PATH`` checkpoints: sizes by hand, causality by the guard,
and a checkpoint's lmbench NLL against its own ``labels=`` loss."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from harness.data.tokenizers import token_byte_lengths
from harness.measure.causality import check_causality
from harness.measure.perplexity import sliding_window_nll
from harness.models import BUDGETS, ModelUnavailable, PresetError, count_parameters, get_model_spec
from harness.models.bdh import BDH, BDHConfig, bdh_parameter_count
from tests.helpers import DATA_DIR, REPO

HAS_PSANN = importlib.util.find_spec("psannlm") is not None
needs_psann = pytest.mark.skipif(not HAS_PSANN, reason="psannlm not installed (pip install 'lmbench[psann]')")
PSANN = ["psann-respsann", "psann-sgrpsann", "psann-waveresnet", "psann-waveresnet-interleave"]
GPT2_DIR = DATA_DIR / "gpt2-bpe"


def _meta_counts(name: str, budget: str, vocab: int = 256, seq_len: int = 128) -> dict[str, int]:
    spec = get_model_spec(name)
    # meta: no memory, no init, counting a 10M model takes milliseconds (psannlm's init calls .item(): real CPU)
    with torch.device("cpu" if spec.family == "psann" else "meta"):
        return count_parameters(spec.build(spec.config(vocab, seq_len, budget)))


# ---------------------------------------------------------------------------------------------------------------
# Budget matching (the families of tests/test_models.py, plus the new ones)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("name", ["bdh"] + [pytest.param(n, marks=needs_psann) for n in PSANN])
def test_new_families_match_transformer_in_non_embedding_parameters(name, budget):
    ref = _meta_counts("transformer", budget)["non_embedding"]
    n = _meta_counts(name, budget)["non_embedding"]
    assert abs(n - ref) / ref <= 0.10, f"{budget}: {name} has {n} non-embedding parameters vs transformer {ref}"


# ---------------------------------------------------------------------------------------------------------------
# BDH
# ---------------------------------------------------------------------------------------------------------------
def test_bdh_reference_size_is_the_closed_form():
    cfg = BDHConfig()  # D 256, H 4, mult 128, V 256, 6 layers
    with torch.device("meta"):
        got = count_parameters(BDH(cfg))
    assert got == {"total": 3 * 128 * 256**2 + 2 * 256 * 256, "non_embedding": 3 * 128 * 256**2}
    assert got["total"] == 25_296_896 == bdh_parameter_count(cfg)["total"]


@pytest.mark.parametrize("budget", BUDGETS)
def test_bdh_presets_follow_the_formula_whatever_the_depth(budget):
    p = get_model_spec("bdh").presets[budget]
    D, mult = p["d_model"], p["mult"]
    assert _meta_counts("bdh", budget, vocab=300) == {"total": 3 * mult * D * D + 2 * 300 * D,
                                                       "non_embedding": 3 * mult * D * D}
    deeper = BDHConfig(vocab_size=300, n_layer=3 * p["n_layer"], n_embd=D, n_head=p["n_head"], mult=mult)
    with torch.device("meta"):
        assert count_parameters(BDH(deeper))["non_embedding"] == 3 * mult * D * D  # one shared layer


def _rope_complex(v: torch.Tensor, theta: float = 2.0**16) -> torch.Tensor:
    """Independent RoPE: neuron pairs as complex numbers, pair j at time t multiplied by exp(i·t·θ^(-2j/N))."""
    T, N = v.shape[-2], v.shape[-1]
    z = torch.view_as_complex(v.reshape(*v.shape[:-1], N // 2, 2).contiguous())
    freq = theta ** (-torch.arange(0, N, 2, dtype=torch.float64) / N)
    rot = torch.polar(torch.ones(T, N // 2, dtype=torch.float64), torch.arange(T, dtype=torch.float64)[:, None] * freq)
    return torch.view_as_real(z * rot).reshape(v.shape)


def test_bdh_parallel_form_equals_the_recurrent_state_form():
    """yKV_t = Σ_{s<t} (q_t·q_s) x_s = q_t · S_t with S_t = Σ_{s<t} q_sᵀ x_s: the strictly causal linear-attention
    recurrence, computed token by token with the model's weights but none of its code."""
    torch.manual_seed(0)
    cfg = BDHConfig(vocab_size=11, n_layer=3, n_embd=16, n_head=2, mult=4, dropout=0.0)
    model = BDH(cfg).double().eval()
    ids = torch.randint(0, 11, (2, 9))
    B, T = ids.shape
    H, N, D = cfg.n_head, cfg.n_neurons, cfg.n_embd

    def ln(t: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(t, t.shape[-1:])

    x = ln(model.embed.weight[ids]).unsqueeze(1)  # (B, 1, T, D)
    for _ in range(cfg.n_layer):
        xs = F.relu(x @ model.encoder)  # (B, H, T, N)
        q = _rope_complex(xs)
        state = torch.zeros(B, H, N, D, dtype=torch.float64)
        y_kv = torch.zeros(B, H, T, D, dtype=torch.float64)
        for t in range(T):
            y_kv[:, :, t] = torch.einsum("bhn,bhnd->bhd", q[:, :, t], state)  # reads tokens < t only
            state = state + torch.einsum("bhn,bd->bhnd", q[:, :, t], x[:, 0, t])
        ys = F.relu(ln(y_kv) @ model.encoder_v)
        y = ln((xs * ys).permute(0, 2, 1, 3).reshape(B, 1, T, H * N) @ model.decoder)
        x = ln(x + y)
    expected = x[:, 0] @ model.lm_head.weight.T
    with torch.no_grad():
        assert torch.allclose(model(ids), expected, atol=1e-10, rtol=1e-10)


def test_bdh_passes_the_causality_guard_and_trains():
    spec = get_model_spec("bdh")
    model = spec.build(spec.config(64, 64, "smoke"))
    assert spec.causal and not check_causality(model, 64, seq_len=64).leak
    ids = torch.randint(0, 64, (2, 33))
    loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    assert math.isfinite(loss.item()) and all(p.grad is not None and p.grad.abs().sum() > 0
                                               for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
# PSANN-LM
# ---------------------------------------------------------------------------------------------------------------
@needs_psann
def test_psann_variants_are_the_packages_own_models():
    built = {n: get_model_spec(n).build(get_model_spec(n).config(64, 64, "smoke")) for n in PSANN}
    assert {n: type(m).__name__ for n, m in built.items()} == {
        "psann-respsann": "ResPSANNTransformer", "psann-sgrpsann": "ResPSANNTransformer",
        "psann-waveresnet": "WaveResNetTransformer", "psann-waveresnet-interleave": "WaveResNetTransformer"}
    assert built["psann-sgrpsann"].blocks[0].spectral is not None and built["psann-respsann"].blocks[0].spectral is None
    assert built["psann-waveresnet-interleave"].blocks[0].wave is not None
    assert built["psann-waveresnet"].blocks[0].wave is None
    ids = torch.randint(0, 64, (2, 17))
    for n, m in built.items():
        out = m.eval()(ids)
        assert out.shape == (2, 17, 64) and torch.isfinite(out).all(), n


def _one_training_step(model: torch.nn.Module, vocab: int) -> None:
    torch.manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, vocab, (4, 65))
    loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()


@needs_psann
@pytest.mark.parametrize("name", PSANN)
def test_psann_declared_causality_is_what_the_guard_finds_after_training(name):
    torch.manual_seed(0)
    spec = get_model_spec(name)
    model = spec.build(spec.config(64, 64, "smoke"))
    at_init = check_causality(model, 64, seq_len=64)
    _one_training_step(model, 64)
    trained = check_causality(model, 64, seq_len=64)
    assert trained.leak == (not spec.causal), trained.message(name)
    assert not spec.default  # opt-in: an optional extra, and two of them leak
    # Only the spectral gate changes its verdict with training: at init sigmoid(0) = 1/2 at every frequency, so
    # the gate is 0.5·x, pointwise in time; one step makes the mask non-uniform and the circular FFT mixes time.
    assert at_init.leak == (name == "psann-waveresnet-interleave"), at_init.message(name)


@needs_psann
def test_psann_spectral_gate_leaks_exactly_when_its_mask_varies_over_frequency():
    spec = get_model_spec("psann-sgrpsann")
    torch.manual_seed(0)
    model = spec.build(spec.config(64, 64, "smoke"))
    with torch.no_grad():
        for blk in model.blocks:
            blk.spectral.mask.fill_(3.0)  # any constant: still pointwise
    assert not check_causality(model, 64, seq_len=64).leak
    with torch.no_grad():
        model.blocks[0].spectral.mask[:, 1] += 1.0  # one frequency bin gated differently
    assert check_causality(model, 64, seq_len=64).leak


def test_psann_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psannlm", None)  # find_spec -> None, import -> ImportError
    spec = get_model_spec("psann-respsann")
    assert "pip install 'lmbench[psann]'" in spec.unavailable_reason()
    with pytest.raises(ModelUnavailable, match=r"psann-respsann.*pip install 'lmbench\[psann\]'"):
        spec.build(spec.config(64, 64, "smoke"))


def test_registry_imports_without_psannlm():
    code = ("import sys; sys.modules['psannlm'] = None; sys.modules['psann'] = None\n"
            "from harness.models import MODELS, get_model_spec\n"
            "names = ['psann-respsann', 'psann-sgrpsann', 'psann-waveresnet', 'psann-waveresnet-interleave']\n"
            "assert all(n in MODELS for n in names)\n"
            "assert [get_model_spec(n).causal for n in names] == [True, False, True, False]\n"
            "assert 'psannlm' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


# ---------------------------------------------------------------------------------------------------------------
# Published shapes
# ---------------------------------------------------------------------------------------------------------------
def _gpt2_count(L: int, d: int, V: int = 50257, P: int = 1024) -> dict[str, int]:
    """Token + position tables, per layer 2 LayerNorms (4d), QKV (3d² + 3d), attention out (d² + d), MLP
    (8d² + 5d), final LayerNorm 2d; the head is tied."""
    non_embedding = L * (12 * d * d + 13 * d) + 2 * d
    return {"total": V * d + P * d + non_embedding, "non_embedding": non_embedding}


@pytest.mark.parametrize("name,L,d,total", [("gpt2-124m", 12, 768, 124_439_808), ("gpt2-355m", 24, 1024, 354_823_168)])
def test_gpt2_shapes_have_the_published_parameter_counts(name, L, d, total):
    got = _meta_counts(name, "full", vocab=50257, seq_len=1024)
    assert got == _gpt2_count(L, d) and got["total"] == total
    assert not get_model_spec(name).default


def test_llama_tiny_shape():
    d, L, f, V = 512, 8, 1376, 256
    got = _meta_counts("llama-tiny", "full", vocab=V, seq_len=256)
    non_embedding = L * (4 * d * d + 3 * d * f + 2 * d) + d  # attention, SwiGLU, 2 RMSNorms; final RMSNorm
    assert got == {"total": non_embedding + V * d, "non_embedding": non_embedding} and non_embedding == 25_305_600


@pytest.mark.parametrize("name", ["gpt2-124m", "gpt2-355m", "llama-tiny"])
@pytest.mark.parametrize("budget", ["smoke", "small"])
def test_fixed_shapes_exist_only_at_full_budget(name, budget):
    from harness.options import parse_options
    from harness.session import Session

    spec = get_model_spec(name)
    with pytest.raises(PresetError, match=f"model {name} has no size preset for budget '{budget}' \\(it has: full\\)"):
        spec.build(spec.config(256, 128, budget))
    # a run that names it at another budget goes on, and its cells are skipped with the reason
    session = Session(parse_options(models=f"transformer,{name}", budget=budget))
    reasons = {c.model: session.skip_reason(c) for c in session.cells("perplexity")}
    assert reasons == {"transformer": None,
                       name: f"model {name} is a fixed published shape defined at --budget full only, not {budget}"}


def test_gpt2_shape_skips_cells_longer_than_its_positions(tmp_path):
    from harness.options import parse_options
    from harness.session import Session

    session = Session(parse_options(models="gpt2-124m", budget="full", seq_lens="1024,2048", cache_dir=tmp_path))
    reasons = [session.skip_reason(c) for c in session.cells("perplexity")]
    assert reasons == [None, "model gpt2-124m supports at most 1024 positions; seq_len 2048 exceeds it"]


# ---------------------------------------------------------------------------------------------------------------
# hf:PATH
# ---------------------------------------------------------------------------------------------------------------
TEXT = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!\n"
        " = Valkyria Chronicles III = \n Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : 戦場のヴァルキュリア3 ) "
        "is a tactical role @-@ playing video game developed by Sega and Media.Vision for the PlayStation Portable .\n")


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory):
    if not (GPT2_DIR / "encoder.json").is_file():
        pytest.skip(f"GPT-2 BPE files not found under {GPT2_DIR}")
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50257, n_positions=128))
    # transformers 5 takes the vocabulary and merges themselves (vocab_file=/merges_file= are silently ignored)
    merges = [tuple(line.split(" ")) for line in (GPT2_DIR / "vocab.bpe").read_text("utf-8").split("\n")[1:] if line]
    tok = GPT2TokenizerFast(vocab=json.loads((GPT2_DIR / "encoder.json").read_text("utf-8")), merges=merges)
    assert len(tok) == 50257
    path = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model.eval(), tok


def test_hf_checkpoint_nll_equals_its_own_labels_loss(gpt2_checkpoint):
    from harness.models.pretrained import load_pretrained

    path, _, hf_tok = gpt2_checkpoint
    lm = load_pretrained(path)
    assert any(path.glob("*.safetensors")) and lm.max_positions == 128 and lm.vocab_size == 50257
    ids = lm.tokenizer.encode(TEXT)
    assert ids.tolist() == hf_tok(TEXT)["input_ids"] and 40 < len(ids) <= 128
    x = torch.as_tensor(ids)[None]
    with torch.no_grad():  # labels=ids: transformers shifts inside and averages over the len-1 predicted tokens
        own = lm.model.inner(input_ids=x, labels=x).loss.double().item()
    total, n = sliding_window_nll(lm.model, ids, window=len(ids))
    assert n == len(ids) - 1  # the first token has no context and is not scored, on both sides
    assert total / n == pytest.approx(own, rel=1e-6)
    w = 32  # disjoint windows: each window's own loss covers its len-1 targets
    total_w, n_w = sliding_window_nll(lm.model, ids, window=w)
    with torch.no_grad():
        own_w = [(lm.model.inner(input_ids=x[:, i:i + w], labels=x[:, i:i + w]).loss.double().item(),
                  min(w, len(ids) - i) - 1) for i in range(0, len(ids), w) if len(ids) - i >= 2]
    assert n_w == sum(k for _, k in own_w)
    assert total_w == pytest.approx(sum(loss * k for loss, k in own_w), rel=1e-6)


def test_hf_checkpoint_is_causal_and_counted(gpt2_checkpoint):
    from harness.models.pretrained import load_pretrained

    lm = load_pretrained(gpt2_checkpoint[0])
    assert not check_causality(lm.model, lm.tokenizer.vocab_size, seq_len=32).leak
    d, V, P, L = 32, 50257, 128, 2
    assert lm.parameters == {"total": V * d + P * d + L * (12 * d * d + 13 * d) + 2 * d,
                             "non_embedding": L * (12 * d * d + 13 * d) + 2 * d}


def test_hf_tokenizer_matches_lmbench_gpt2_and_counts_bytes_exactly(gpt2_checkpoint, tmp_path):
    from harness.data.base import DataContext
    from harness.data.tokenizers import load_gpt2
    from harness.models.pretrained import load_checkpoint_tokenizer

    tok = load_checkpoint_tokenizer(gpt2_checkpoint[0])
    text = TEXT + "a literal <|endoftext|> is text here\n" + TEXT * 3
    ref = load_gpt2(DataContext(data_dir=DATA_DIR, cache_dir=tmp_path))
    ids = tok.encode(text)
    assert ids.tolist() == ref.encode(text).tolist()  # same ids as --tokenizers gpt2, special string included
    assert int(token_byte_lengths(tok)[ids].sum()) == len(text.encode("utf-8"))


def test_sentencepiece_style_checkpoint_tokenizer_counts_bytes_exactly(tmp_path):
    """A Metaspace BPE with byte fallback (LLaMA-2 style, not byte-level): the anchored decode gives each id's bytes;
    characters outside the vocabulary become <0xHH> byte tokens counted as one byte each."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    from harness.models.pretrained import load_checkpoint_tokenizer

    raw = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    raw.normalizer = normalizers.NFC()
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                                  show_progress=False)
    raw.train_from_iterator([TEXT.split("Senj")[0]] * 20, trainer=trainer)  # ASCII only: the rest falls back
    PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
                            ).save_pretrained(tmp_path)
    tok = load_checkpoint_tokenizer(tmp_path)
    assert not tok.byte_level
    text = TEXT * 2 + "<s> naïve café\n"
    enc = tok.tok.encode(text, add_special_tokens=False)
    ids = tok.encode(text)
    assert ids.tolist() == enc.ids and any(tok.tok.id_to_token(i).startswith("<0x") for i in ids)
    first = len(text[: enc.offsets[0][1]].encode("utf-8"))  # token 0 has a dummy-prefix space not in the text
    lengths = token_byte_lengths(tok)
    assert int(lengths[ids[1:]].sum()) == len(text.encode("utf-8")) - first


def test_hf_loader_reads_bin_weights_only_and_refuses_empty_folders(gpt2_checkpoint, tmp_path):
    from harness.models.pretrained import (
        PretrainedUnavailable,
        load_pretrained,
        parse_hf_name,
    )

    path, model, tok = gpt2_checkpoint
    bin_dir = tmp_path / "bin"
    model.config.save_pretrained(bin_dir)
    torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
    tok.save_pretrained(bin_dir)
    lm = load_pretrained(bin_dir)
    x = torch.randint(0, 50257, (1, 20))
    with torch.no_grad():
        assert torch.allclose(lm.model(x), model(input_ids=x).logits, atol=1e-6)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PretrainedUnavailable, match="no config.json"):
        load_pretrained(tmp_path / "empty")
    model.config.save_pretrained(tmp_path / "noweights")
    with pytest.raises(PretrainedUnavailable, match="no weights"):
        load_pretrained(tmp_path / "noweights")
    assert parse_hf_name(f"hf:{path}") == path and parse_hf_name("transformer") is None
    assert parse_hf_name("hf:") is None


def test_hf_checkpoint_through_the_perplexity_benchmark(gpt2_checkpoint, tmp_path):
    """``--models hf:PATH`` loads (never trains) the checkpoint, scores with its own tokenizer on the eval-only raw
    WikiText-2 test text, and records where everything came from; longer windows than its positions are skipped."""
    from harness.results.records import read_records
    from tests.helpers import run_benches

    path, model, _ = gpt2_checkpoint
    proc = run_benches(tmp_path / "r", tmp_path / "c", "-m", "perplexity", "--models", f"hf:{path}",
                       "--datasets", "wikitext-2-raw", "--seq-lens", "64,256", "--budget", "micro", "-rs")
    recs = {r["seq_len"]: r for r in read_records(tmp_path / "r" / "records.jsonl")}
    assert set(recs) == {64, 256}, proc.stdout + proc.stderr
    rec, skipped = recs[64], recs[256]
    assert skipped["status"] == "skipped" and "supports at most 128 positions; seq_len 256" in skipped["reason"]
    assert rec["train"] == {"source": "pretrained", "steps": 0, "tokens": 0}
    assert rec["tokenizer"] == f"hf:{path}" and rec["protocol"]["window"] == 64
    assert rec["protocol"]["train"] == {"pretrained": str(path.resolve())}
    assert rec["protocol"]["unigram_fit"].startswith("the evaluated tokens")
    assert rec["params"]["total"] == sum(p.numel() for p in model.parameters())
    # a random 2-layer model does not beat the unigram baseline: the [default] target fails it, honestly
    assert rec["status"] == "failed" and "ppl_over_unigram" in rec["reason"], rec["reason"]
    assert rec["metrics"]["ppl"] > 1000 and rec["leak"] is False
