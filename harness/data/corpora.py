"""Dataset specs and loaders: the ``DATASETS`` registry.

Every real corpus is read through Hugging Face ``datasets`` (``load_dataset("text", ..., keep_linebreaks=True)``
for local files, cached under ``<cache_dir>/hf-datasets``) and joined back to the exact original text, so a
split's ``str`` equals the file's content (LF line endings; the ``text`` builder reads files in universal-newline
mode, so CRLF files come back with LF). The Hub is only touched when ``ctx.allow_hub`` (``--hub``); otherwise the
``datasets``/``huggingface_hub`` offline switches are on for the duration of the call.

Names: the built-ins below, ``synthetic-markov-o<K>`` (order-K variant of the synthetic source), ``text:PATH``
(any folder with ``train.txt``, ``valid.txt`` or ``validation.txt``, ``test.txt``) and import strings
``pkg.module:attr`` (a ``DatasetSpec`` or a callable ``load(ctx) -> Corpus``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from harness.data.base import SPLITS, Corpus, DataContext, DataUnavailable
from harness.data.cache import hub_mode
from harness.data.synthetic import synthetic_corpus
from harness.registry import Registry, UnknownNameError

HUB_HINT = "set --data-dir/LMBENCH_DATA_DIR or pass --hub"
LOCAL_HINT = "set --data-dir/LMBENCH_DATA_DIR (local files only: no Hub fallback)"

# Hub fallbacks for web-scale corpora stream a bounded number of documents (train, valid, test).
HUB_DOCS = {"train": 5_000, "valid": 500, "test": 500}


@dataclass
class DatasetSpec:
    name: str
    description: str
    load: Callable[[DataContext], Corpus]  # raises DataUnavailable (message names the folder and files expected)
    embedded: bool = False  # needs no files (runs by default)
    word_level: bool = False  # word-level perplexity is defined (whitespace words + one <eos> per line)
    check: Callable[[DataContext], str | None] | None = field(default=None, repr=False)  # cheap availability

    def availability(self, ctx: DataContext) -> str | None:
        """None if loadable in ``ctx``, else the one-line reason (without loading when a cheap check exists)."""
        if self.check is not None:
            return self.check(ctx)
        try:
            self.load(ctx)
        except DataUnavailable as exc:
            return str(exc)
        return None


class DatasetRegistry(Registry[DatasetSpec]):
    """``Registry`` plus ``text:PATH`` names (the base class deliberately leaves ``text:`` to this subclass)."""

    TEXT_TEMPLATE = "text:PATH"

    def get(self, name: str) -> DatasetSpec:
        if name.startswith("text:"):
            path = name[len("text:"):]
            if not path:
                raise UnknownNameError(f"dataset {name!r}: give a folder after 'text:' (text:PATH)")
            return text_folder_spec(path)
        return super().get(name)

    def names(self) -> list[str]:
        return super().names() + [self.TEXT_TEMPLATE]


DATASETS: DatasetRegistry = DatasetRegistry("dataset")


def get_dataset_spec(name: str) -> DatasetSpec:
    """Resolve a dataset name (built-in, pattern, ``text:PATH`` or import string) to a ``DatasetSpec``."""
    entry = DATASETS.get(name)
    if isinstance(entry, DatasetSpec):
        return entry
    if isinstance(entry, Corpus):
        corpus = entry
        return DatasetSpec(name=name, description="user corpus (import string)", load=lambda ctx: corpus,
                           embedded=True, word_level=corpus.word_level)
    if callable(entry):
        return DatasetSpec(name=name, description="user loader (import string)", load=entry)
    raise UnknownNameError(f"dataset {name!r} is neither a DatasetSpec, a Corpus nor a load(ctx) callable")


def validate_dataset_names(names: Iterable[str]) -> list[str]:
    """Check every name up front (``text:`` names included); UnknownNameError lists the valid names."""
    return DATASETS.validate(names)


def load_corpus(name: str, ctx: DataContext) -> Corpus:
    return get_dataset_spec(name).load(ctx)


def dataset_availability(name: str, ctx: DataContext) -> str | None:
    """None if the dataset can be loaded in ``ctx``, else the one-line reason (folder and files expected)."""
    return get_dataset_spec(name).availability(ctx)


def default_dataset_names() -> list[str]:
    return [n for n, spec in DATASETS.entries().items() if spec.embedded]


# ---------------------------------------------------------------------------------------------------------------
# Local layouts
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """One accepted on-disk layout: a folder under the data dir and one file per split (alternatives allowed)."""

    folder: str
    files: dict[str, tuple[str, ...]]  # split -> candidate file names, first is the canonical one
    optional: tuple[str, ...] = ()  # splits that may be absent (an eval-only copy: no train split)

    def expected(self) -> str:
        return ", ".join(" or ".join(self.files[s]) for s in SPLITS)

    def resolve(self, root: Path) -> tuple[dict[str, Path] | None, list[str]]:
        """(split -> file, []) if every split has a file, else (None, missing canonical names)."""
        found, missing = {}, []
        for split in SPLITS:
            hit = next((root / self.folder / f for f in self.files[split] if (root / self.folder / f).is_file()), None)
            if hit is None and split in self.optional:
                continue
            if hit is None:
                missing.append(self.files[split][0])
            else:
                found[split] = hit
        return (found, []) if not missing else (None, missing)


def _locate(name: str, ctx: DataContext, layouts: Sequence[Layout], hint: str) -> tuple[dict[str, Path] | None, str]:
    """Find the first complete layout; else (None, reason naming the folder and the files expected)."""
    if ctx.data_dir is None:
        where = "; or ".join(f"<data_dir>/{lay.folder}/ ({lay.expected()})" for lay in layouts)
        return None, f"{name}: no data directory set (expected {where}); {hint}"
    root = Path(ctx.data_dir)
    partial = None
    for lay in layouts:
        found, missing = lay.resolve(root)
        if found is not None:
            return found, ""
        if partial is None and (root / lay.folder).is_dir() and len(missing) < len(SPLITS):
            partial = (lay, missing)
    if partial is not None:
        lay, missing = partial
        reason = (f"{name}: {root / lay.folder} lacks {', '.join(missing)} "
                  f"(expected {lay.expected()})")
    else:
        lay = layouts[0]
        reason = f"{name}: no data under {root / lay.folder} (expected {lay.expected()})"
    others = [f"{root / o.folder} ({o.expected()})" for o in layouts if o is not lay]
    if others:
        reason += f"; also accepted: {'; '.join(others)}"
    return None, f"{reason}; {hint}"


def _cache_dir(ctx: DataContext) -> str:
    return str(Path(ctx.cache_dir) / "hf-datasets")


def _load_text_files(files: dict[str, Path], ctx: DataContext, *, document: bool = False) -> dict[str, str]:
    """Read local text files through ``datasets``' text builder and join the rows back to the exact text."""
    import datasets

    nonempty = {split: str(path) for split, path in files.items() if path.stat().st_size > 0}
    out = {split: "" for split in files}  # ``datasets`` rejects empty files: an empty file is an empty split
    if nonempty:
        with hub_mode(ctx.allow_hub):
            ds = datasets.load_dataset(
                "text",
                data_files=nonempty,
                keep_linebreaks=True,
                sample_by="document" if document else "line",
                cache_dir=_cache_dir(ctx),
            )
        out.update({split: "".join(ds[split]["text"]) for split in nonempty})
    return out


def _load_jsonl_files(files: dict[str, Path], ctx: DataContext, field_name: str = "text") -> dict[str, str]:
    """Local JSON-lines documents (field ``text``), joined with a blank line between documents."""
    import datasets

    nonempty = {split: str(path) for split, path in files.items() if path.stat().st_size > 0}
    out = {split: "" for split in files}
    if nonempty:
        with hub_mode(ctx.allow_hub):
            ds = datasets.load_dataset("json", data_files=nonempty, cache_dir=_cache_dir(ctx))
        out.update({split: _join_docs(ds[split][field_name]) for split in nonempty})
    return out


def _join_docs(docs: Iterable[str]) -> str:
    return "\n\n".join(d.strip("\n") for d in docs) + "\n"


def _rows_to_lines(rows: Iterable[str], blank: str = "\n") -> str:
    """Hub rows -> text: rows keep or get a trailing newline; empty rows become ``blank``."""
    out = []
    for r in rows:
        if not r:
            out.append(blank)
        else:
            out.append(r if r.endswith("\n") else r + "\n")
    return "".join(out)


def _hub_error(name: str, local_reason: str, hub_id: str, exc: Exception) -> DataUnavailable:
    local = local_reason.removesuffix(f"; {HUB_HINT}")
    detail = " ".join(str(exc).split())[:300]
    return DataUnavailable(f"{local}; the Hub fallback {hub_id} failed ({type(exc).__name__}: {detail}); "
                           f"set --data-dir/LMBENCH_DATA_DIR or check the network")


# ---------------------------------------------------------------------------------------------------------------
# Spec builders
# ---------------------------------------------------------------------------------------------------------------
def _local_or_hub_spec(
    name: str,
    description: str,
    layouts: Sequence[Layout],
    *,
    word_level: bool,
    hub: Callable[[DataContext], dict[str, str]] | None,
    hub_id: str | None,
    jsonl_layouts: Sequence[Layout] = (),
) -> DatasetSpec:
    hint = HUB_HINT if hub is not None else LOCAL_HINT
    all_layouts = list(layouts) + list(jsonl_layouts)

    def locate(ctx: DataContext) -> tuple[dict[str, Path] | None, bool, str]:
        files, reason = _locate(name, ctx, all_layouts, hint)
        is_json = files is not None and all(p.suffix == ".jsonl" for p in files.values())
        return files, is_json, reason

    def check(ctx: DataContext) -> str | None:
        files, _, reason = locate(ctx)
        if files is not None or (hub is not None and ctx.allow_hub):
            return None
        return reason

    def load(ctx: DataContext) -> Corpus:
        files, is_json, reason = locate(ctx)
        if files is not None:
            splits = _load_jsonl_files(files, ctx) if is_json else _load_text_files(files, ctx)
            missing = [s for s in SPLITS if s not in splits]
            folder = files["test"].parent
            meta = {"files": {s: str(p) for s, p in files.items()}}
            if missing:  # an eval-only copy: the absent splits are empty, and the corpus says so
                splits.update({s: "" for s in missing})
                meta["missing_splits"] = missing
            return Corpus(name=name, splits=splits, source=str(folder), word_level=word_level, meta=meta)
        if hub is None or not ctx.allow_hub:
            raise DataUnavailable(reason)
        try:
            with hub_mode(True):
                splits = hub(ctx)
        except DataUnavailable:
            raise
        except Exception as exc:  # network, missing packages, renamed hub ids...
            raise _hub_error(name, reason, hub_id or "?", exc) from exc
        return Corpus(name=name, splits=splits, source=f"hub:{hub_id}", word_level=word_level,
                      meta={"hub_id": hub_id})

    return DatasetSpec(name=name, description=description, load=load, embedded=False, word_level=word_level,
                       check=check)


def _hub_wikitext(config: str) -> Callable[[DataContext], dict[str, str]]:
    def load(ctx: DataContext) -> dict[str, str]:
        import datasets

        ds = datasets.load_dataset("Salesforce/wikitext", config, cache_dir=_cache_dir(ctx))
        # Hub rows are the file's lines (with "\n"), whitespace-only lines turned into "": restore them as " \n".
        return {s: _rows_to_lines(ds[h]["text"], blank=" \n") for s, h in
                (("train", "train"), ("valid", "validation"), ("test", "test"))}

    return load


def _hub_ptb(ctx: DataContext) -> dict[str, str]:
    import datasets

    last: Exception | None = None
    for hub_id in ("ptb-text-only/ptb_text_only", "ptb_text_only"):
        try:
            ds = datasets.load_dataset(hub_id, cache_dir=_cache_dir(ctx))
            break
        except Exception as exc:  # try the legacy id
            last = exc
    else:
        assert last is not None
        raise last
    # Local ptb.*.txt lines look like " w1 w2 ... \n"; hub rows are "w1 w2 ...". Word counts are identical.
    return {s: _rows_to_lines(" " + r + " " for r in ds[h]["sentence"]) for s, h in
            (("train", "train"), ("valid", "validation"), ("test", "test"))}


def _hub_streamed(hub_id: str, data_files: dict[str, str] | None, split_map: dict[str, tuple[str, int]]):
    """Stream a bounded number of documents per split: split_map[split] = (hub split, documents to skip)."""

    def load(ctx: DataContext) -> dict[str, str]:
        import datasets

        out = {}
        for split in SPLITS:
            hub_split, skip = split_map[split]
            kwargs = {"data_files": data_files} if data_files else {}
            ds = datasets.load_dataset(hub_id, split=hub_split, streaming=True, **kwargs)
            docs = (row["text"] for row in itertools.islice(ds, skip, skip + HUB_DOCS[split]))
            out[split] = _join_docs(docs)
        return out

    return load


def text_folder_spec(path: str | Path) -> DatasetSpec:
    """``text:PATH``: a folder with ``train.txt``, ``valid.txt`` (or ``validation.txt``), ``test.txt``."""
    folder = Path(path).expanduser()
    name = f"text:{path}"
    layout = Layout(".", {"train": ("train.txt",), "valid": ("valid.txt", "validation.txt"), "test": ("test.txt",)})

    def locate() -> tuple[dict[str, Path] | None, str]:
        found, missing = layout.resolve(folder)
        if found is not None:
            return found, ""
        what = "no data under" if len(missing) == len(SPLITS) else f"missing {', '.join(missing)} in"
        return None, f"{name}: {what} {folder} (expected {layout.expected()})"

    def check(ctx: DataContext) -> str | None:
        return locate()[1] or None

    def load(ctx: DataContext) -> Corpus:
        files, reason = locate()
        if files is None:
            raise DataUnavailable(reason)
        return Corpus(name=name, splits=_load_text_files(files, ctx), source=str(folder), word_level=True,
                      meta={"files": {s: str(p) for s, p in files.items()}})

    return DatasetSpec(name=name, description=f"plain-text splits from {folder}", load=load, word_level=True,
                       check=check)


# ---------------------------------------------------------------------------------------------------------------
# Tiny Shakespeare: one file, split by characters 90% / 5% / 5% (train / valid / test, in file order)
# ---------------------------------------------------------------------------------------------------------------
TINYSHAKESPEARE_FRACTIONS = (0.90, 0.05, 0.05)


def split_by_chars(text: str, fractions: tuple[float, float, float] = TINYSHAKESPEARE_FRACTIONS) -> dict[str, str]:
    """train = text[:int(0.9 n)], valid = text[int(0.9 n):int(0.95 n)], test = the rest."""
    n = len(text)
    a = int(n * fractions[0])
    b = int(n * (fractions[0] + fractions[1]))
    return {"train": text[:a], "valid": text[a:b], "test": text[b:]}


def _tinyshakespeare(ctx: DataContext) -> Corpus:
    reason = _tinyshakespeare_check(ctx)
    if reason is not None:
        raise DataUnavailable(reason)
    path = Path(ctx.data_dir) / "tinyshakespeare" / "input.txt"  # type: ignore[arg-type]
    text = _load_text_files({"train": path}, ctx, document=True)["train"]
    return Corpus(name="tinyshakespeare", splits=split_by_chars(text), source=str(path.parent), word_level=False,
                  meta={"files": {"all": str(path)}, "split": "characters 90% / 5% / 5% (train/valid/test)"})


def _tinyshakespeare_check(ctx: DataContext) -> str | None:
    if ctx.data_dir is None:
        return f"tinyshakespeare: no data directory set (expected <data_dir>/tinyshakespeare/input.txt); {LOCAL_HINT}"
    path = Path(ctx.data_dir) / "tinyshakespeare" / "input.txt"
    if path.is_file():
        return None
    return f"tinyshakespeare: no data under {path.parent} (expected input.txt); {LOCAL_HINT}"


# ---------------------------------------------------------------------------------------------------------------
# Registrations
# ---------------------------------------------------------------------------------------------------------------
def _splits(train: str, valid: str, test: str) -> dict[str, tuple[str, ...]]:
    return {"train": (train,), "valid": (valid,), "test": (test,)}


DATASETS.add("synthetic-markov", DatasetSpec(
    name="synthetic-markov",
    description="embedded order-1 Markov source, V=32 symbols 'a'..'F', Dirichlet(0.2) rows; exact entropy floor",
    load=lambda ctx: synthetic_corpus(),
    embedded=True,
    word_level=False,
    check=lambda ctx: None,
))


def _synthetic_order(K: str) -> DatasetSpec:
    order = int(K)
    if not 0 <= order <= 3:
        raise UnknownNameError(f"dataset 'synthetic-markov-o{K}': order must be 0..3 (V=32 gives 32^K contexts)")
    name = f"synthetic-markov-o{order}"
    return DatasetSpec(name=name, description=f"embedded order-{order} Markov source (V=32, Dirichlet(0.2))",
                       load=lambda ctx: synthetic_corpus(order=order, name=name), embedded=False,
                       word_level=False, check=lambda ctx: None)


DATASETS.add_pattern("synthetic-markov-o<K>", _synthetic_order)

DATASETS.add("wikitext-2", _local_or_hub_spec(
    "wikitext-2", "WikiText-2 (v1, tokenized, <unk>), word-level; 2,088,628 / 217,646 / 245,569 words",
    [Layout("wikitext-2-v1-tokenized", _splits("train.txt", "valid.txt", "test.txt")),
     Layout("wikitext-2", _splits("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"))],
    word_level=True, hub=_hub_wikitext("wikitext-2-v1"), hub_id="Salesforce/wikitext:wikitext-2-v1",
))
DATASETS.add("wikitext-2-raw", _local_or_hub_spec(
    "wikitext-2-raw", "WikiText-2 raw (v1, untokenized, no <unk>); words = whitespace tokens + eos per line",
    [Layout("wikitext-2-raw-v1", _splits("wiki.train.raw", "wiki.valid.raw", "wiki.test.raw"), optional=("train",))],
    word_level=True, hub=_hub_wikitext("wikitext-2-raw-v1"), hub_id="Salesforce/wikitext:wikitext-2-raw-v1",
))
DATASETS.add("wikitext-103", _local_or_hub_spec(
    "wikitext-103", "WikiText-103 (v1, tokenized, <unk>), word-level",
    [Layout("wikitext-103-v1-tokenized", _splits("train.txt", "valid.txt", "test.txt")),
     Layout("wikitext-103", _splits("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"))],
    word_level=True, hub=_hub_wikitext("wikitext-103-v1"), hub_id="Salesforce/wikitext:wikitext-103-v1",
))
DATASETS.add("ptb", _local_or_hub_spec(
    "ptb", "Penn Treebank (Mikolov's 10k-vocabulary text), word-level",
    [Layout("ptb", _splits("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"))],
    word_level=True, hub=_hub_ptb, hub_id="ptb-text-only/ptb_text_only",
))
DATASETS.add("tinyshakespeare", DatasetSpec(
    name="tinyshakespeare",
    description="Tiny Shakespeare (char-rnn input.txt), split by characters 90/5/5; local only",
    load=_tinyshakespeare,
    word_level=False,
    check=_tinyshakespeare_check,
))
def _web_layout(folder: str, ext: str) -> Layout:
    return Layout(folder, {"train": (f"train.{ext}",), "valid": (f"valid.{ext}", f"validation.{ext}"),
                           "test": (f"test.{ext}",)})


DATASETS.add("c4", _local_or_hub_spec(
    "c4", f"C4 English; local {{train,valid,test}}.txt|.jsonl, or (--hub) the first {HUB_DOCS['train']:,} / "
          f"{HUB_DOCS['valid']:,} / {HUB_DOCS['test']:,} documents of allenai/c4 en",
    [_web_layout("c4", "txt")],
    jsonl_layouts=[_web_layout("c4", "jsonl")],
    word_level=False,
    hub=_hub_streamed(
        "allenai/c4",
        {"train": "en/c4-train.00000-of-01024.json.gz", "validation": "en/c4-validation.00000-of-00008.json.gz"},
        {"train": ("train", 0), "valid": ("validation", 0), "test": ("validation", HUB_DOCS["valid"])},
    ),
    hub_id="allenai/c4 (en, streamed)",
))
DATASETS.add("pile", _local_or_hub_spec(
    "pile", f"The Pile (uncopyrighted); local {{train,valid,test}}.txt|.jsonl, or (--hub) the first "
            f"{HUB_DOCS['train']:,} / {HUB_DOCS['valid']:,} / {HUB_DOCS['test']:,} documents per split",
    [_web_layout("pile", "txt")],
    jsonl_layouts=[_web_layout("pile", "jsonl")],
    word_level=False,
    hub=_hub_streamed("monology/pile-uncopyrighted", None,
                      {"train": ("train", 0), "valid": ("validation", 0), "test": ("test", 0)}),
    hub_id="monology/pile-uncopyrighted (streamed)",
))
