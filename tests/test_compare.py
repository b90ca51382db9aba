"""``python -m harness compare | baseline | tables`` on results folders and baseline files written here (no training),
and the committed CI baseline and BENCHMARKS.md tables checked against the code and the records they came from."""
import subprocess
import sys

import pytest

from harness.__main__ import main
from harness.results.baseline import load_baseline
from harness.results.records import RecordWriter
from tests.helpers import REPO

GROUP = "perplexity|model={m}|dataset=synthetic-markov|tokenizer=byte|seed={s}|budget=smoke|seq_len=128|bits=fp32|device=cpu"
PROTOCOL = {"split": "test", "unit": "token", "window": 128, "stride": 128, "eval_tokens": 65536,
            "tokenizer": "byte", "train": {"seq_len": 128}, "eval": {"window": None}}


def _rec(model, seed, ppl, status="passed"):
    return {"benchmark": "perplexity", "test_id": f"benches/test_perplexity.py::test_perplexity[{model}-s{seed}]",
            "cell_id": GROUP.format(m=model, s=seed), "model": model, "dataset": "synthetic-markov",
            "tokenizer": "byte", "budget": "smoke", "seq_len": 128, "bits": "fp32", "seed": seed, "status": status,
            "metrics": {"ppl": ppl, "ppl_over_floor": ppl / 8.477, "tokens_per_s": 5e4}, "protocol": PROTOCOL,
            "environment": {"git_commit": "abc123", "device": "cpu"}}


def _folder(path, values):
    """A results folder: ``values`` is {model: [ppl of seed 0, 1, …]}."""
    w = RecordWriter(path / "records.jsonl")
    for model, ppls in values.items():
        for seed, ppl in enumerate(ppls):
            w.write(_rec(model, seed, ppl))
    return path


BASE = {"transformer": [9.27, 9.25, 9.29], "mamba": [9.03, 8.99, 9.06]}


def test_compare_exits_1_on_a_regression_with_the_one_line_message(tmp_path, capsys):
    a = _folder(tmp_path / "a", BASE)
    b = _folder(tmp_path / "b", {"transformer": [9.27, 9.25 * 1.2, 9.29], "mamba": BASE["mamba"]})
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "6 cells: 5 ok, 1 regressed" in out
    line = next(x for x in out.splitlines() if x.startswith("REGRESSED "))
    assert line.endswith(f"ppl regressed 9.250 → 11.10 (+20.0% > 2% allowed) vs baseline {a}")
    assert "## Over seeds (paired by seed, Holm-corrected over the groups)" in out


def test_compare_passes_noise_within_the_tolerance_and_an_improvement(tmp_path, capsys):
    a = _folder(tmp_path / "a", BASE)
    b = _folder(tmp_path / "b", {"transformer": [9.27 * 1.005, 9.25 * 0.995, 9.29],  # 0.5% noise: within 2%
                                 "mamba": [x * 0.8 for x in BASE["mamba"]]})           # 20% better: improved
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "6 cells: 3 improved, 3 ok" in out and "REGRESSED" not in out


def test_compare_a_baseline_file_with_a_folder_and_report_new_and_missing_cells(tmp_path, capsys):
    a = _folder(tmp_path / "a", BASE)
    assert main(["baseline", str(a), str(tmp_path / "b.json")]) == 0
    assert "6 cells from" in capsys.readouterr().out
    base = load_baseline(tmp_path / "b.json")
    assert len(base.cells) == 6 and all("tokens_per_s" not in c.metrics for c in base.cells.values())
    b = _folder(tmp_path / "b", {"transformer": BASE["transformer"], "llama": [9.28]})
    assert main(["compare", str(tmp_path / "b.json"), str(b)]) == 0
    out = capsys.readouterr().out
    assert "4 cells: 1 new, 3 ok; 3 of A's cells are not in B" in out and "## In A, not in B" in out


@pytest.mark.parametrize("args, words", [
    (["compare", "{tmp}/nothing", "{tmp}/a"], "no such file"),
    (["compare", "{tmp}/broken.json", "{tmp}/a"], "is not valid JSON"),
    (["compare", "{tmp}/empty", "{tmp}/a"], "has no records.jsonl"),
    (["baseline", "{tmp}/empty", "{tmp}/x.json"], "no records in"),
    (["baseline", "{tmp}/a", "{tmp}/broken.json"], "is not valid JSON"),
    (["baseline", "{tmp}/failed", "{tmp}/x.json"], "no passed records"),
    (["summary", "{tmp}/empty"], "no records in"),
    (["tables", "{tmp}/empty"], "has no records.jsonl"),
])
def test_cli_mistakes_are_one_usage_line(tmp_path, capsys, args, words):
    _folder(tmp_path / "a", BASE)
    (tmp_path / "empty").mkdir()
    RecordWriter(tmp_path / "failed" / "records.jsonl").write(_rec("llama", 0, 99.0, status="failed"))
    (tmp_path / "broken.json").write_text("{not json")
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err


def test_compare_as_a_user_runs_it(tmp_path):
    """The module entry point, in a subprocess: exit status and output as CI sees them."""
    a = _folder(tmp_path / "a", BASE)
    b = _folder(tmp_path / "b", {"transformer": [9.27, 9.25, 9.29 * 1.05], "mamba": BASE["mamba"]})
    proc = subprocess.run([sys.executable, "-m", "harness", "compare", str(a), str(b)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "ppl regressed 9.290 → 9.755 (+5.0% > 2% allowed)" in proc.stdout


# ------------------------------------------------------------------------------------ published tables


def test_tables_fill_the_markers_and_check_catches_a_stale_document(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "runs" / "one", BASE)
    doc = tmp_path / "DOC.md"
    doc.write_text("# Numbers\n\nkept\n\n<!-- lmbench-tables:begin runs/one -->\nold\n<!-- lmbench-tables:end runs/one -->"
                   "\n\nalso kept\n")
    assert main(["tables", "runs/one", "--into", "DOC.md", "--check"]) == 1  # 'old' is stale
    assert main(["tables", "runs/one", "--into", "DOC.md"]) == 0
    text = doc.read_text()
    assert text.startswith("# Numbers\n\nkept\n") and text.endswith("also kept\n") and "old" not in text
    assert "| mamba | 0,1,2 | 9.027 ± 0.087 (n = 3) |" in text and "| mamba | transformer | 3 |" in text
    assert main(["tables", "runs/one", "--into", "DOC.md", "--check"]) == 0
    _folder(tmp_path / "runs" / "one", {"llama": [9.5]})  # a record added: the document is stale again
    assert main(["tables", "runs/one", "--into", "DOC.md", "--check"]) == 1
    capsys.readouterr()
    doc.write_text("no markers\n")
    assert main(["tables", "runs/one", "--into", "DOC.md"]) == 2
    assert "no single pair of marker lines for runs/one" in capsys.readouterr().err


# -------------------------------------------------------------------------- the committed CI baseline

CI_BASELINE = REPO / "reports" / "baselines" / "cpu-smoke.json"


def test_benchmarks_md_matches_the_committed_records(monkeypatch, capsys):
    """Every number in BENCHMARKS.md's generated block is what the committed records give."""
    monkeypatch.chdir(REPO)
    assert main(["tables", "reports/baselines/cpu-smoke", "--into", "BENCHMARKS.md", "--check"]) == 0, \
        capsys.readouterr().err


def test_the_ci_baseline_covers_the_ci_cells_under_todays_protocol():
    """The cells CI gates (README: `pytest benches -m perplexity --seeds 0,1,2 --baseline …`) are all in the committed
    baseline under the training and evaluation configs the code uses today; otherwise CI would report them as new or
    protocol-changed and gate nothing. Refresh: docs/reports.md, "Writing and refreshing a baseline"."""
    from harness.options import parse_options
    from harness.results.gate import gate_for
    from harness.session import Session

    session = Session(parse_options(seeds="0,1,2", device="cpu", budget="smoke"))
    base = load_baseline(CI_BASELINE)
    cells = session.cells("perplexity")
    assert len(cells) == 12
    config = gate_for("perplexity", "smoke", session.options.targets_dir)
    for cell in cells:
        entry = base.get(cell.cell_id)
        assert entry is not None, f"{cell.cell_id} is not in {CI_BASELINE.name}: refresh it"
        ours = config.protocol_of({"train": session.provisioner.train_config(cell).to_dict(),
                                   "eval": session.provisioner.eval_config(cell).to_dict()})
        assert {k: entry.protocol.get(k) for k in ours} == ours, f"{cell.cell_id}: protocol changed; refresh it"
        assert set(config.rules) <= set(entry.metrics)
