"""Where a task's documents come from: files under the data directory, or a Hugging Face dataset with ``--hub``.

A task file names a ``source`` with a ``local`` part (format + files, relative to the data directory) and an
optional ``hub`` part. Local files always win; the Hub is used only when the files are missing *and*
``DataContext.allow_hub`` is set, and then inside ``hub_mode`` (the only place network access is allowed).

Both paths produce the same rows (plain dicts) by three declarative fix-ups, so one template serves both:
``rename`` (column -> field), ``collect`` (several columns -> one list field, e.g. MMLU's ``choice0..3`` ->
``choices``) and ``label_map`` (raw label -> class index, e.g. SuperGLUE RTE's ``"entailment"`` -> 0).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.data.base import DataContext, DataUnavailable

FORMATS = ("jsonl", "csv", "tsv", "squad_json")


@dataclass(frozen=True)
class Fixups:
    """Declarative row fix-ups shared by local and Hub sources (module doc)."""

    rename: Mapping[str, str] = field(default_factory=dict)
    collect: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    label_map: Mapping[str, int] = field(default_factory=dict)
    label_field: str = "label"

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {self.rename.get(k, k): v for k, v in row.items()}
        for name, cols in self.collect.items():
            out[name] = [out.pop(c) for c in cols]
        if self.label_map and self.label_field in out:
            raw = out[self.label_field]
            key = str(raw).lower() if isinstance(raw, bool) else str(raw)
            if key not in self.label_map:
                raise ValueError(f"label {raw!r} not in label_map {dict(self.label_map)}")
            out[self.label_field] = self.label_map[key]
        return out


@dataclass(frozen=True)
class LocalFiles:
    """Files under the data directory. ``labels``: a file with one label per line, aligned with the rows and
    stored in field ``label`` (PIQA ships its labels that way)."""

    format: str
    files: tuple[str, ...]
    labels: str | None = None
    fixups: Fixups = field(default_factory=Fixups)

    def paths(self, data_dir: Path) -> list[Path]:
        rel = list(self.files) + ([self.labels] if self.labels else [])
        return [Path(data_dir) / r for r in rel]

    def missing(self, data_dir: Path | None) -> list[str]:
        if data_dir is None:
            return list(self.files) + ([self.labels] if self.labels else [])
        return [str(p.relative_to(data_dir)) for p in self.paths(Path(data_dir)) if not p.is_file()]

    def read(self, data_dir: Path) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for rel in self.files:
            rows.extend(read_rows(Path(data_dir) / rel, self.format))
        if self.labels:
            labels = (Path(data_dir) / self.labels).read_text(encoding="utf-8").split()
            if len(labels) != len(rows):
                raise ValueError(f"{self.labels}: {len(labels)} labels for {len(rows)} rows")
            for row, lab in zip(rows, labels):
                row["label"] = lab
        return [self.fixups.apply(r) for r in rows]


@dataclass(frozen=True)
class HubDataset:
    """``datasets.load_dataset(path, name, split=split)``, used only with ``--hub``."""

    path: str
    split: str
    name: str | None = None
    fixups: Fixups = field(default_factory=Fixups)

    def read(self, ctx: DataContext) -> list[dict[str, Any]]:
        import datasets

        from harness.data.cache import hub_mode

        with hub_mode(True):
            ds = datasets.load_dataset(self.path, self.name, split=self.split,
                                       cache_dir=str(Path(ctx.cache_dir) / "datasets"))
        return [self.fixups.apply(dict(r)) for r in ds]

    def describe(self) -> str:
        return f"hub:{self.path}" + (f"/{self.name}" if self.name else "") + f":{self.split}"


@dataclass(frozen=True)
class Source:
    local: LocalFiles | None = None
    hub: HubDataset | None = None

    def availability(self, ctx: DataContext, what: str) -> str | None:
        """None if the rows can be read in ``ctx``, else a one-line reason naming the files expected."""
        if self.local is not None and not self.local.missing(ctx.data_dir):
            return None
        if self.hub is not None and ctx.allow_hub:
            return None
        if self.local is None:
            return f"{what}: Hub-only source {self.hub.describe() if self.hub else '?'}; pass --hub"
        where = str(ctx.data_dir) if ctx.data_dir is not None else "<data_dir> (no data directory set)"
        missing = ", ".join(self.local.missing(ctx.data_dir))
        hint = "set --data-dir/LMBENCH_DATA_DIR" + (" or pass --hub" if self.hub is not None else "")
        return f"{what}: missing under {where}: {missing}; {hint}"

    def read(self, ctx: DataContext, what: str) -> tuple[list[dict[str, Any]], str]:
        """The rows and where they came from (a path or ``hub:...``)."""
        if self.local is not None and not self.local.missing(ctx.data_dir):
            assert ctx.data_dir is not None
            paths = self.local.paths(Path(ctx.data_dir))
            return self.local.read(Path(ctx.data_dir)), ", ".join(str(p) for p in paths)
        reason = self.availability(ctx, what)
        if reason is not None or self.hub is None:
            raise DataUnavailable(reason or f"{what}: no source")
        return self.hub.read(ctx), self.hub.describe()


# ------------------------------------------------------------------------------------------ file readers
def read_rows(path: Path, fmt: str) -> list[dict[str, Any]]:
    """Rows of one file. ``tsv`` is read with quoting off (GLUE's TSVs contain unbalanced quotes); ``csv`` with
    standard quoting (MMLU's multi-line questions are quoted fields). Both drop a UTF-8 byte-order mark."""
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if fmt == "csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            return [dict(r) for r in csv.DictReader(f)]
    if fmt == "tsv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            return [dict(r) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    if fmt == "squad_json":
        return squad_rows(json.loads(path.read_text(encoding="utf-8")))
    raise ValueError(f"unknown source format {fmt!r}; known: {', '.join(FORMATS)}")


def squad_rows(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten the official SQuAD JSON (data -> paragraphs -> qas) into the Hub's row shape
    (``id, title, context, question, answers: {text: [...], answer_start: [...]}``)."""
    rows = []
    for article in obj["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                rows.append({
                    "id": qa["id"],
                    "title": article.get("title", ""),
                    "context": para["context"],
                    "question": qa["question"],
                    "answers": {"text": [a["text"] for a in qa["answers"]],
                                "answer_start": [a["answer_start"] for a in qa["answers"]]},
                })
    return rows


def parse_fixups(d: Mapping[str, Any]) -> Fixups:
    return Fixups(
        rename=dict(d.get("rename") or {}),
        collect={k: tuple(v) for k, v in (d.get("collect") or {}).items()},
        label_map={str(k): int(v) for k, v in (d.get("label_map") or {}).items()},
        label_field=str(d.get("label_field", "label")),
    )


def parse_source(d: Mapping[str, Any] | None) -> Source | None:
    """A ``source:`` block of a task file -> ``Source`` (unknown keys are errors: typos must not pass silently)."""
    if d is None:
        return None
    _check_keys(d, {"local", "hub"}, "source")
    local = hub = None
    if d.get("local") is not None:
        loc = d["local"]
        _check_keys(loc, {"format", "files", "labels", "rename", "collect", "label_map", "label_field"}, "source.local")
        if loc["format"] not in FORMATS:
            raise ValueError(f"source.local.format {loc['format']!r}; known: {', '.join(FORMATS)}")
        files = loc["files"]
        local = LocalFiles(loc["format"], tuple([files] if isinstance(files, str) else files), loc.get("labels"),
                           parse_fixups(loc))
    if d.get("hub") is not None:
        h = d["hub"]
        _check_keys(h, {"path", "name", "split", "rename", "collect", "label_map", "label_field"}, "source.hub")
        hub = HubDataset(h["path"], h["split"], h.get("name"), parse_fixups(h))
    return Source(local, hub)


def _check_keys(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(d) - allowed
    if extra:
        raise ValueError(f"{where}: unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
