"""Cells, provisioning and the Python API (no pytest plugin involved), and train-once across xdist workers."""
import subprocess
import sys
import textwrap

import pytest
import torch

from harness.cells import Cell
from harness.config import BudgetError, EvalConfig, TrainConfig
from harness.launch.devices import split_threads, worker_device
from harness.options import parse_options
from harness.provision.weights import code_fingerprint
from harness.results.records import read_records
from harness.session import Session
from tests.helpers import DATA_DIR, REPO, TOY, bench_env

CELL = dict(benchmark="perplexity", model=TOY, dataset="synthetic-markov", tokenizer="byte", seed=0, budget="micro",
            seq_len=64, bits="fp32", device="cpu")


@pytest.fixture
def session(tmp_path):
    return Session(parse_options(models=TOY, budget="micro", cache_dir=tmp_path / "cache",
                                 results_dir=tmp_path / "results", data_dir=DATA_DIR))


def test_cell_identity_and_train_key():
    a = Cell(**CELL)
    assert a.cell_id == ("perplexity|model=tests.toys:causal_spec|dataset=synthetic-markov|tokenizer=byte|seed=0|"
                         "budget=micro|seq_len=64|bits=fp32|device=cpu")
    assert a.replace(bits="int4").train_key == a.train_key  # quantized variants share the trained weights
    assert a.replace(seq_len=128).train_key != a.train_key  # the length is a training axis
    assert a.replace(seed=1).group_id == a.group_id != a.replace(bits="int4").group_id
    assert Cell(benchmark="kernels", params=(("mode", "causal"),)).train_key is None


def test_session_cells_are_the_product_of_the_options(tmp_path):
    s = Session(parse_options(models="transformer,llama", seeds="0-2", bits="fp32,int8", budget="micro",
                              cache_dir=tmp_path))
    cells = s.cells("perplexity")
    assert len(cells) == 2 * 3 and {c.bits for c in cells} == {"fp32"} and {c.seq_len for c in cells} == {64}
    quant = s.cells("quantization", axes=("model", "dataset", "seed", "bits"), fixed={"seed": [7]})
    assert len(quant) == 2 * 2 and {c.seed for c in quant} == {7}
    assert len({c.cell_id for c in quant}) == len(quant)


def test_provisioned_models_are_private_copies(session):
    cell = Cell(**CELL)
    first = session.provision(cell)
    with torch.no_grad():
        for p in first.module.parameters():
            p.zero_()
    second = session.provision(cell)
    assert second.source == "memo" and second.weights_key == first.weights_key
    assert all(bool(p.abs().sum() > 0) for p in second.module.parameters())


def test_changing_the_eval_config_does_not_retrain(tmp_path):
    cell = Cell(**CELL)
    opts = dict(models=TOY, budget="micro", cache_dir=tmp_path / "cache", data_dir=DATA_DIR)
    first = Session(parse_options(**opts)).provision(cell, EvalConfig(eval_tokens=1000, window=32))
    again = Session(parse_options(**opts)).provision(cell, EvalConfig(eval_tokens=5000, window=64, stride=16))
    assert first.source == "trained" and again.source == "cache"
    assert again.weights_key == first.weights_key and again.eval_cfg.window == 64
    longer = Session(parse_options(**opts)).provision(cell.replace(seq_len=128))
    assert longer.source == "trained" and longer.weights_key != first.weights_key


def test_weight_key_follows_the_builder_source(tmp_path, monkeypatch):
    """Editing a model's code changes its weights key (no hand-bumped version constant)."""
    module = tmp_path / "mymodel.py"
    module.write_text("def build(cfg):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import mymodel

    before = code_fingerprint(mymodel.build)
    module.write_text("def build(cfg):\n    return None  # edited\n")
    from harness.provision import weights

    weights._files_digest.cache_clear()
    mymodel = importlib.reload(mymodel)
    assert code_fingerprint(mymodel.build) != before


def test_steps_come_from_the_token_budget_or_an_error():
    cfg = TrainConfig(seq_len=64, batch_size=8, train_tokens=32_768)
    assert cfg.steps == 64 and cfg.at_seq_len(256).steps == 64 and cfg.at_seq_len(256).batch_size == 2
    with pytest.raises(BudgetError, match="exceeds the training budget of 32,768 tokens"):
        _ = cfg.at_seq_len(65_536).steps


def test_the_python_api_measures_without_pytest(session):
    from harness.measure import perplexity

    (cell,) = session.cells("perplexity")
    pm = session.provision(cell)
    record, verdict = session.finalize(cell, perplexity.measure(pm), pm.provenance())
    assert verdict.outcome == "passed", verdict.message
    assert record.cell_id == cell.cell_id and record.metrics["ppl_over_floor"] < 2.0
    assert record.protocol["train"]["seq_len"] == 64 and record.protocol["targets"] == {
        "ppl_over_floor": {"max": 2.0}, "ppl_over_unigram": {"max": 1.0}}  # [synthetic-markov], then [default]


def test_xdist_workers_map_to_gpus_and_split_cores():
    assert worker_device("cuda", "gw3", n_gpus=2) == torch.device("cuda", 1)
    assert worker_device("cuda", "gw4", n_gpus=2) == torch.device("cuda", 0)
    assert worker_device("cuda", None, n_gpus=4) == torch.device("cuda", 0)
    assert worker_device("cpu", "gw1") == torch.device("cpu")
    assert split_threads(2, cpu_count=16) == 8 and split_threads(32, cpu_count=16) == 1


def test_two_xdist_workers_needing_the_same_weights_train_once(tmp_path):
    """Four tests on two workers, one weights key: the file lock makes exactly one of them train."""
    (tmp_path / "test_same_cell.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.perplexity
        @pytest.mark.parametrize("k", range(4))
        def test_uses_the_cell(cell, provision, k):
            provision(cell)
        """))
    cmd = [sys.executable, "-m", "pytest", str(tmp_path / "test_same_cell.py"), "-n", "2", "-q", "-p",
           "no:cacheprovider", "--models", TOY, "--budget", "smoke", "--results-dir", str(tmp_path / "r"),
           "--cache-dir", str(tmp_path / "c"), "--rootdir", str(tmp_path)]
    env = bench_env() | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = read_records(tmp_path / "r" / "records.jsonl")
    assert len(recs) == 4 and len({r["worker"] for r in recs}) == 2, [(r["worker"], r["test_id"]) for r in recs]
    sources = sorted(r["train"]["source"] for r in recs)
    assert sources.count("trained") == 1, sources
