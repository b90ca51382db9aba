"""Downstream library: metrics, the context/continuation split, the scorer, task files, per-example results, the
synthetic controls and the fine-tuning protocol.

Every expected value is computed independently of the code under test: scipy's Wilson interval, closed-form
log-likelihoods of models with a known distribution (uniform, bigram table), a one-token-at-a-time reference
scorer, counts stated in the data's PROVENANCE.md, and raw files read directly.
"""
from __future__ import annotations

import json
import math
import string

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from harness.data import ByteTokenizer, DataContext, WordTokenizer
from harness.data.tokenizers import gpt2_files, load_gpt2
from harness.downstream import (
    TASKS,
    Example,
    FinetuneRecipe,
    ScoringConfig,
    aggregate,
    aggregate_group,
    binary_f1,
    bootstrap_interval,
    build_examples,
    choice_predictions,
    classification_data,
    encode_pair,
    exact_match,
    finetune_cv,
    get_task,
    kfold_split,
    load_task_file,
    locate_features,
    read_jsonl,
    resolve_tasks,
    score_examples,
    score_token_pairs,
    shuffle_class_labels,
    shuffle_labels,
    synthetic_choice_task,
    synthetic_classification,
    task_availability,
    token_f1,
    wilson_interval,
    write_jsonl,
)
from harness.downstream.finetune import FeatureExtractor
from harness.downstream.scorer import greedy_generate
from harness.registry import UnknownNameError
from tests.helpers import DATA_DIR
from tests.toys import CausalToy

HAVE_DATA = (DATA_DIR / "piqa" / "valid.jsonl").is_file()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"downstream data not found under {DATA_DIR}")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------ toy models
class UniformLM(nn.Module):
    """Every next token has probability 1/V: a continuation of n tokens has log-likelihood -n log V."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros((*ids.shape, self.vocab_size))


class BigramLM(nn.Module):
    """logits[t] = table[ids[t]]: the next-token distribution depends on the current token only."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


@pytest.fixture(scope="module")
def data_ctx(tmp_path_factory) -> DataContext:
    return DataContext(data_dir=DATA_DIR, cache_dir=tmp_path_factory.mktemp("cache"), allow_hub=False)


@pytest.fixture(scope="module")
def gpt2(data_ctx):
    if gpt2_files(data_ctx) is None:
        pytest.skip(f"gpt2 tokenizer files not found under {DATA_DIR}")
    return load_gpt2(data_ctx)


# ------------------------------------------------------------------------------------------ metrics
@given(n=st.integers(1, 400), frac=st.floats(0, 1))
@FAST
def test_wilson_matches_scipy(n, frac):
    from scipy.stats import binomtest

    k = int(round(frac * n))
    ref = binomtest(k, n).proportion_ci(0.95, method="wilson")
    iv = wilson_interval(k, n)
    assert iv.value == pytest.approx(k / n)
    assert iv.low == pytest.approx(ref.low, abs=1e-9)
    assert iv.high == pytest.approx(ref.high, abs=1e-9)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    vals = np.random.default_rng(1).random(200)
    a, b = bootstrap_interval(vals, seed=3), bootstrap_interval(vals, seed=3)
    assert a == b
    assert a.low < vals.mean() < a.high
    assert bootstrap_interval(np.ones(30)).low == bootstrap_interval(np.ones(30)).high == 1.0


def test_acc_norm_divides_by_characters_of_the_choice():
    # raw: choice 0 wins (-10 > -12); per character: -10/1 < -12/6 = -2, so choice 1 wins
    p = choice_predictions([-10.0, -12.0], ["a", "abcdef"])
    assert (p.pred, p.pred_norm) == (0, 1)
    # per byte differs from per character for multi-byte text: "éé" is 2 characters but 4 bytes
    p = choice_predictions([-3.4, -5.0], ["éé", "abc"])
    assert (p.pred, p.pred_norm, p.pred_bytes) == (0, 1, 0)  # per char -1.7 < -1.67; per byte -0.85 > -1.67


def test_squad_metrics_follow_the_official_normalisation():
    assert exact_match("The Eiffel Tower!", ["Eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower"]) == 0.0
    # pred tokens {tower, in, paris}, gold {eiffel, tower}: P = 1/3, R = 1/2, F1 = 0.4
    assert token_f1("Tower in Paris", ["Eiffel Tower"]) == pytest.approx(0.4)
    assert token_f1("Tower in Paris", ["nothing", "Eiffel Tower", "Paris"]) == pytest.approx(max(0.4, 0.5))
    assert token_f1("a an the", ["Eiffel"]) == 0.0


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=60))
@FAST
def test_binary_f1_is_harmonic_mean_of_precision_and_recall(pairs):
    golds, preds = [g for g, _ in pairs], [p for _, p in pairs]
    tp = sum(g == p == 1 for g, p in pairs)
    if tp == 0:
        assert binary_f1(golds, preds) == 0.0
        return
    precision, recall = tp / sum(preds), tp / sum(golds)
    assert binary_f1(golds, preds) == pytest.approx(2 / (1 / precision + 1 / recall))


# ------------------------------------------------------------------------------------------ the split
def test_trailing_space_moves_to_the_continuation(gpt2):
    pair = encode_pair(gpt2, "Question: is the sky blue?\nAnswer: ", "yes", prefix_token_id=50256)
    assert (pair.context, pair.continuation) == ("Question: is the sky blue?\nAnswer:", " yes")
    assert list(pair.continuation_ids) == gpt2.encode(" yes").tolist() and len(pair.continuation_ids) == 1
    assert list(pair.context_ids) == gpt2.encode("Question: is the sky blue?\nAnswer:").tolist()
    assert not pair.boundary_merged


def test_a_token_across_the_boundary_is_recorded(gpt2):
    pair = encode_pair(gpt2, "hel", "lo world", prefix_token_id=50256)
    assert pair.boundary_merged  # "hello" is one token: the context's own encoding is not a prefix
    assert len(pair.context_ids) + len(pair.continuation_ids) == len(gpt2.encode("hello world"))


def test_empty_context_conditions_on_the_prefix_token(gpt2):
    byte = ByteTokenizer()
    assert encode_pair(byte, "", "ab", 10).context_ids == (10,)
    pair = encode_pair(byte, "", "\nab", 10)  # lm-eval: a continuation starting with the prefix token supplies it
    assert (pair.context_ids, pair.continuation_ids) == ((10,), (97, 98))
    assert encode_pair(gpt2, "", " yes", 50256).context_ids == (50256,)
    assert encode_pair(byte, "   ", "x", 10).context_ids == (10,)  # whitespace-only context


def test_word_tokenizer_fragments_carry_no_spurious_eos():
    tok = WordTokenizer.from_text("the cat sat on the mat\n")
    s = tok.stoi
    assert encode_pair(tok, "the cat", " sat", tok.eos_id).continuation_ids == (s["sat"],)
    # a newline is the word tokenizer's <eos>: it belongs to the continuation once moved
    assert encode_pair(tok, "the cat\n", "sat", tok.eos_id).continuation_ids == (tok.eos_id, s["sat"])


words = st.text(alphabet=string.ascii_letters, min_size=1, max_size=8)
contexts = st.builds(lambda ws, end, tail: " ".join(ws) + end + tail,
                     st.lists(words, min_size=1, max_size=12), st.sampled_from([".", "?", ":", "", "!"]),
                     st.sampled_from(["", " ", "  ", "\n"]))
continuations = st.builds(lambda ws: " " + " ".join(ws), st.lists(words, min_size=1, max_size=4))


@given(ctx=contexts, cont=continuations, max_len=st.sampled_from([4, 16, 512]))
@FAST
def test_uniform_model_scores_minus_n_log_v_for_byte_and_gpt2(gpt2, ctx, cont, max_len):
    """The same example, scored by a uniform model over bytes and over GPT-2 BPE: -n_tokens * log V, where n is
    the number of tokens of (moved trailing whitespace + continuation) on its own — a pre-tokenizer boundary, so
    the joint split must agree with it. Holds with truncation (max_len=4) and chunked continuations."""
    moved = ctx[len(ctx.rstrip()):] + cont
    ex = Example("t", 0, ctx, (cont,), "", 0)
    for tok, n in ((ByteTokenizer(), len(moved.encode("utf-8"))), (gpt2, len(gpt2.encode(moved)))):
        V = tok.vocab_size
        res = score_examples(UniformLM(V), tok, [ex], ScoringConfig(max_len=max_len, batch_size=4))[0]
        assert res.n_tokens == [n]
        assert res.loglikelihoods[0] == pytest.approx(-n * math.log(V), rel=1e-12)


# ------------------------------------------------------------------------------------------ the scorer
def test_scorer_equals_the_closed_form_of_a_bigram_model():
    gen = torch.Generator().manual_seed(0)
    V = 40
    table = torch.randn(V, V, generator=gen) * 3
    logp = torch.log_softmax(table.double(), -1)
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, V, size=int(rng.integers(1, 30))).tolist(),
              rng.integers(0, V, size=int(rng.integers(1, 15))).tolist()) for _ in range(25)]
    pairs.append(([3], [int(table[3].argmax())]))  # a greedy one
    got = score_token_pairs(BigramLM(table), pairs, max_len=6, batch_size=4)
    for (ctx, cont), s in zip(pairs, got):
        prev = [ctx[-1]] + cont[:-1]
        assert s.logprob == pytest.approx(float(sum(logp[p, t] for p, t in zip(prev, cont))), abs=1e-9)
        assert s.is_greedy == all(int(table[p].argmax()) == t for p, t in zip(prev, cont))
        assert s.n_windows == math.ceil(len(cont) / 6)
    assert got[-1].is_greedy


@torch.no_grad()
def _reference_loglik(model: nn.Module, ctx: list[int], cont: list[int], max_len: int) -> float:
    """One forward per continuation token. Chunks of max_len continuation tokens; within a chunk every token is
    predicted from the window lm-eval feeds: the last max_len tokens before the chunk's last token."""
    total = 0.0
    for a in range(0, len(cont), max_len):
        full = ctx + cont[: a + max_len]
        start = max(0, len(full) - 1 - max_len)
        for g in range(len(ctx) + a, len(full)):
            logits = model(torch.tensor([full[start:g]]))[0, -1].double()
            total += float(torch.log_softmax(logits, -1)[full[g]])
    return total


def test_scorer_matches_a_one_token_at_a_time_reference():
    torch.manual_seed(0)
    model = CausalToy(50, d=16).eval()
    rng = np.random.default_rng(1)
    pairs = [(rng.integers(0, 50, size=int(rng.integers(1, 25))).tolist(),
              rng.integers(0, 50, size=int(rng.integers(1, 20))).tolist()) for _ in range(20)]
    got = score_token_pairs(model, pairs, max_len=8, batch_size=3)
    for (ctx, cont), s in zip(pairs, got):
        assert s.logprob == pytest.approx(_reference_loglik(model, ctx, cont, 8), abs=1e-4)
        assert s.truncated == (len(ctx) + min(len(cont), 8) - 1 > 8)


def test_greedy_generation_stops_at_the_stop_string_and_the_budget():
    table = torch.full((256, 256), -10.0)
    table[torch.arange(255), torch.arange(1, 256)] = 10.0  # after byte b comes b + 1
    model, tok = BigramLM(table), ByteTokenizer()
    ids = tok.encode("xa").tolist()
    assert greedy_generate(model, tok, ids, ["e"], max_gen_toks=10, max_len=64) == "bcd"
    assert greedy_generate(model, tok, ids, ["e"], max_gen_toks=2, max_len=64) == "bc"
    assert greedy_generate(model, tok, ids, [], max_gen_toks=3, max_len=4) == "bcd"


# ------------------------------------------------------------------------------------------ tasks
def test_unknown_task_is_an_error_listing_the_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        resolve_tasks(["piqa", "no_such_task"])
    msg = str(err.value)
    assert "no_such_task" in msg and "piqa" in msg and "lambada_openai" in msg and "mmlu (group of 57" in msg


def test_shipped_tasks_and_groups():
    names = set(TASKS.names())
    assert {"lambada_openai", "piqa", "boolq", "copa", "rte", "sst2", "mrpc", "squad_v1", "hellaswag"} <= names
    assert len(resolve_tasks(["mmlu"])) == 57 and len(resolve_tasks(["mmlu_5shot"])) == 57
    assert {t.num_fewshot for t in resolve_tasks(["mmlu_5shot"])} == {5}
    assert get_task("mmlu_anatomy").description.startswith("The following are multiple choice questions")
    assert "about high school us history." in get_task("mmlu_high_school_us_history").description


def test_missing_data_gives_a_reason_naming_the_files(tmp_path):
    empty = DataContext(data_dir=tmp_path, cache_dir=tmp_path / "c", allow_hub=False)
    assert "squad-v1.1/dev-v1.1.json" in task_availability("squad_v1", empty)
    assert "hellaswag/hellaswag_val.jsonl" in task_availability("hellaswag", empty)
    assert "piqa/valid-labels.lst" in task_availability("piqa", empty)
    assert "mmlu/dev/anatomy_dev.csv" in task_availability("mmlu_5shot_anatomy", empty)
    assert task_availability("squad_v1", DataContext(tmp_path, tmp_path / "c", allow_hub=True)) is None


@needs_data
def test_squad_and_hellaswag_are_unavailable_on_the_shared_data(data_ctx):
    for name in ("squad_v1", "hellaswag"):
        assert task_availability(name, data_ctx) is not None
    for name in ("lambada_openai", "piqa", "boolq", "copa", "rte", "sst2", "mrpc", "mmlu", "mmlu_5shot"):
        assert task_availability(name, data_ctx) is None, name


@needs_data
@pytest.mark.parametrize("name, n, gold, count", [
    ("piqa", 1838, 1, None), ("boolq", 3270, 1, 2033), ("rte", 277, 0, 146), ("copa", 100, 1, 45),
    ("sst2", 872, 1, 444), ("mrpc", 408, 1, 279), ("lambada_openai", 5153, 0, 5153),
])
def test_shipped_task_sizes_and_labels_match_provenance(data_ctx, name, n, gold, count):
    examples, _ = build_examples(get_task(name), data_ctx)
    assert len(examples) == n
    if count is None:  # PIQA: count the labels file directly
        count = (DATA_DIR / "piqa" / "valid-labels.lst").read_text().split().count("1")
    assert sum(e.gold == gold for e in examples) == count


@needs_data
def test_rendered_prompts_follow_the_raw_files(data_ctx):
    raw = json.loads((DATA_DIR / "superglue-copa" / "val.jsonl").read_text().splitlines()[0])
    ex = build_examples(get_task("copa"), data_ctx, limit=1)[0][0]
    assert ex.context == raw["premise"][:-1] + (" therefore" if raw["question"] == "effect" else " because")
    assert ex.choices[ex.gold] == raw[f"choice{raw['label'] + 1}"][0].lower() + raw[f"choice{raw['label'] + 1}"][1:]
    text = json.loads((DATA_DIR / "lambada-openai" / "lambada_test.jsonl").read_text().splitlines()[7])["text"]
    ex = build_examples(get_task("lambada_openai"), data_ctx, limit=8)[0][7]
    assert ex.context + ex.choices[0] == text and ex.choices[0] == " " + text.split(" ")[-1]


@needs_data
def test_mmlu_counts_and_five_shot_context(data_ctx):
    import csv

    total = sum(len(build_examples(t, data_ctx)[0]) for t in resolve_tasks(["mmlu"]))
    assert total == 14042
    with open(DATA_DIR / "mmlu" / "dev" / "anatomy_dev.csv", newline="") as f:
        dev = list(csv.DictReader(f))
    ex = build_examples(get_task("mmlu_5shot_anatomy"), data_ctx, limit=1)[0][0]
    zero = build_examples(get_task("mmlu_anatomy"), data_ctx, limit=1)[0][0]
    header = "The following are multiple choice questions (with answers) about anatomy.\n\n"
    shots = "".join(f"{d['question'].strip()}\nA. {d['choice0']}\nB. {d['choice1']}\nC. {d['choice2']}\n"
                    f"D. {d['choice3']}\nAnswer: {'ABCD'[int(d['answer'])]}\n\n" for d in dev[:5])
    assert ex.context == header + shots + zero.context[len(header):]
    assert zero.context.endswith("\nAnswer:") and ex.choices == ("A", "B", "C", "D")


def test_user_task_file_with_expand_and_include(tmp_path):
    (tmp_path / "d").mkdir()
    for k in ("x", "y"):
        rows = [{"q": f"{k}{i}?", "opts": ["no", "yes"], "lab": "pos" if i % 2 else "neg"} for i in range(4)]
        (tmp_path / "d" / f"{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "base.yaml").write_text(
        'task: "toy_{{v}}"\ngroup: toy\noutput_type: multiple_choice\nexpand: {v: [x, y]}\n'
        'source: {local: {format: jsonl, files: ["d/{{v}}.jsonl"], label_map: {neg: 0, pos: 1}, label_field: lab}}\n'
        'description: "About {{v}}.\\n"\ndoc_to_text: "Q: {{q}}\\nA:"\ndoc_to_choice: opts\ndoc_to_target: lab\n')
    (tmp_path / "shot.yaml").write_text('include: base.yaml\ntask: "toy1_{{v}}"\ngroup: toy1\nnum_fewshot: 1\n'
                                        'fewshot_source: {local: {format: jsonl, files: ["d/{{v}}.jsonl"], '
                                        'label_map: {neg: 0, pos: 1}, label_field: lab}}\n')
    ctx = DataContext(tmp_path, tmp_path / "c")
    specs = load_task_file(tmp_path / "shot.yaml")
    assert [s.name for s in specs] == ["toy1_x", "toy1_y"] and specs[1].group == "toy1"
    exs, origin = build_examples(specs[1], ctx)
    assert origin.endswith("y.jsonl") and [e.gold for e in exs] == [0, 1, 0, 1]
    assert exs[2].context == "About y.\nQ: y0?\nA: no\n\nQ: y2?\nA:"
    (tmp_path / "bad.yaml").write_text("task: t\noutput_typo: multiple_choice\n")
    with pytest.raises(ValueError, match="output_typo"):
        load_task_file(tmp_path / "bad.yaml")


# ------------------------------------------------------------------------------------------ results
def test_per_example_results_trace_every_number(tmp_path):
    torch.manual_seed(0)
    task = synthetic_choice_task(n_examples=30, seed=2)
    res = score_examples(CausalToy(256, d=16), ByteTokenizer(), task.examples, ScoringConfig(max_len=16))
    agg = aggregate("synthetic_choice", res, ("acc", "acc_norm"))
    back = read_jsonl(write_jsonl(agg.examples, tmp_path / "r.jsonl"))
    assert back == agg.examples
    k = sum(int(np.argmax(r.loglikelihoods)) == r.gold for r in back)  # recomputed from the rows alone
    assert agg.metrics["acc"] == k / 30 and agg.intervals["acc"].low <= k / 30 <= agg.intervals["acc"].high
    assert back[0].context == task.examples[0].context and back[0].choices == list(task.examples[0].choices)


def test_group_average_micro_and_macro():
    def fake(name, n, k):
        ex = [Example(name, i, "c", ("a", "b"), " ", 0) for i in range(n)]
        rows = score_examples(UniformLM(256), ByteTokenizer(), ex, ScoringConfig(max_len=8))
        for i, r in enumerate(rows):
            r.scores["acc"] = float(i < k)
        return aggregate(name, rows, ("acc",))

    g = aggregate_group("g", [fake("a", 10, 5), fake("b", 30, 30)])
    assert g.micro == pytest.approx(35 / 40) and g.macro == pytest.approx((0.5 + 1.0) / 2) and g.n == 40


# ------------------------------------------------------------------------------------------ controls
def _train_lm(model: nn.Module, ids: np.ndarray, steps: int = 150, seq_len: int = 32, lr: float = 1e-2) -> None:
    """Plain next-token training on random windows (kept here so the test does not depend on the harness loop)."""
    data = torch.as_tensor(ids, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq_len - 1, (16, 1), generator=gen)
        chunk = data[starts + torch.arange(seq_len + 1)]
        loss = nn.functional.cross_entropy(model(chunk[:, :-1]).reshape(-1, 256), chunk[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_trained_model_beats_chance_and_shuffled_labels_score_chance():
    task = synthetic_choice_task(n_examples=200, n_choices=4, seed=0)
    tok = ByteTokenizer()
    torch.manual_seed(0)
    model = CausalToy(256, d=32)
    _train_lm(model, tok.encode(task.train_text))
    scoring = ScoringConfig(max_len=32, batch_size=64)
    acc = aggregate("s", score_examples(model, tok, task.examples, scoring), ("acc",)).metrics["acc"]
    shuffled = shuffle_labels(task.examples, seed=1)
    assert sorted(e.gold for e in shuffled) == sorted(e.gold for e in task.examples)
    acc_shuffled = aggregate("s", score_examples(model, tok, shuffled, scoring), ("acc",)).metrics["acc"]
    assert acc >= 0.9, acc
    assert acc_shuffled < 0.45, acc_shuffled  # chance is 0.25; Wilson upper bound at n=200 is ~0.31


# ------------------------------------------------------------------------------------------ fine-tuning
@given(n=st.integers(2, 300), k=st.integers(2, 10), seed=st.integers(0, 5))
@FAST
def test_kfold_split_is_a_seeded_partition(n, k, seed):
    if k > n:
        return
    split = kfold_split(n, k, seed)
    flat = [i for f in split.test_indices for i in f]
    assert sorted(flat) == list(range(n))
    assert max(split.sizes) - min(split.sizes) <= 1
    assert kfold_split(n, k, seed) == split
    assert set(split.train_indices(0)).isdisjoint(split.test_indices[0])


def test_features_are_the_input_of_the_output_head():
    torch.manual_seed(0)
    model = CausalToy(256, d=16)
    ids = torch.randint(0, 256, (2, 9))
    source = locate_features(model)
    assert (source.kind, source.module) == ("head_input", "head")
    h = model.emb(ids)
    expected = h + torch.tanh(model.mix(h))  # CausalToy.forward up to the head, written out
    ext = FeatureExtractor(model, source)
    assert torch.allclose(ext(ids), expected)
    ext.close()
    assert not model.head._forward_pre_hooks


def test_finetuning_learns_a_last_token_rule_and_not_shuffled_labels():
    texts, labels = synthetic_classification(150, seed=0)
    torch.manual_seed(0)
    model = CausalToy(256)
    recipe = FinetuneRecipe(steps=60, lr=3e-3, seeds=(0,), n_folds=3, max_len=48)
    res = finetune_cv(model, ByteTokenizer(), texts, labels, 2, recipe, task="synthetic")
    assert res.seeds[0].n == 150 and res.split["sizes"] == [50, 50, 50]
    assert res.seeds[0].acc >= 0.85, res.summary()
    assert res.summary()["recipe"]["early_stopping"].startswith("none")
    shuffled = finetune_cv(model, ByteTokenizer(), texts, shuffle_class_labels(labels, 1), 2, recipe)
    assert shuffled.seeds[0].acc < 0.7, shuffled.summary()


@needs_data
def test_classification_data_for_the_finetuning_tasks(data_ctx):
    texts, labels, k = classification_data(get_task("sst2"), data_ctx)
    assert (len(texts), sum(labels), k) == (872, 444, 2)
    assert texts[1] == "unflinchingly bleak and desperate " and labels[1] == 0
    texts, labels, _ = classification_data(get_task("mrpc"), data_ctx, limit=2)
    assert texts[0].startswith("He said the foodservice pie business") and "\n" in texts[0] and labels == [1, 0]
    texts, labels, _ = classification_data(get_task("boolq"), data_ctx, limit=1)
    assert texts[0].endswith("\nQuestion: does ethanol take more energy make that produces?")


# ------------------------------------------------------------------------------------------ absent tasks, when present
def test_hellaswag_and_squad_run_once_their_files_appear(tmp_path):
    """Both are defined but absent from shared/data: fabricate one file of each in the official format."""
    (tmp_path / "hellaswag").mkdir()
    row = {"activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.",
           "ctx_b": "then", "endings": [", the man [title] adds wax.", " the man stops."], "label": "1"}
    (tmp_path / "hellaswag" / "hellaswag_val.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "squad-v1.1").mkdir()
    squad = {"data": [{"title": "Denver", "paragraphs": [{"context": "Denver won.", "qas": [
        {"id": "q1", "question": "Who won?", "answers": [{"text": "Denver", "answer_start": 0},
                                                        {"text": "the Broncos", "answer_start": 0}]}]}]}]}
    (tmp_path / "squad-v1.1" / "dev-v1.1.json").write_text(json.dumps(squad))
    ctx = DataContext(tmp_path, tmp_path / "c")
    assert task_availability("hellaswag", ctx) is None and task_availability("squad_v1", ctx) is None
    (hs,), _ = build_examples(get_task("hellaswag"), ctx)
    # lm-eval's preprocessing: label + ": " + ctx_a + " " + ctx_b.capitalize(); " [title]" -> ". "
    assert hs.context == "Removing ice from car: Then, the man writes over the snow. Then"
    assert hs.choices == (", the man. adds wax.", "the man stops.") and hs.gold == 1
    (sq,), _ = build_examples(get_task("squad_v1"), ctx)
    assert sq.context == "Title: Denver\n\nBackground: Denver won.\n\nQuestion: Who won?\n\nAnswer:"
    assert sq.gold == ("Denver", "the Broncos")
    torch.manual_seed(0)
    res = score_examples(CausalToy(256, d=16), ByteTokenizer(), [sq], ScoringConfig(max_len=64), "generate_until")
    agg = aggregate("squad_v1", res, ("exact_match", "f1"))
    assert res[0].scores["f1"] == token_f1(res[0].prediction, ["Denver", "the Broncos"])
    assert "\n" not in res[0].prediction and 0.0 <= agg.metrics["f1"] <= 1.0
