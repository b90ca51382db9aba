"""Downstream tasks as data: task files (YAML) -> ``TaskSpec`` -> rendered ``Example`` requests; the ``TASKS``
registry.

A task file under ``harness/data/tasks/`` says where the documents are (``source``, see ``sources.py``), how a
document becomes a context and answer choices (Jinja templates with lm-evaluation-harness' semantics, so a task
can be checked against lm-eval's own YAML), and which metrics apply. Keys:

* ``task`` (name), ``group`` (optional), ``about`` (one sentence for reports), ``output_type``:
  ``multiple_choice`` (score every choice, argmax), ``loglikelihood`` (one target: LAMBADA's last word) or
  ``generate_until`` (greedy generation, exact match / F1).
* ``doc_to_text`` / ``doc_to_target`` / ``doc_to_choice``: a field name, or a Jinja template (``StrictUndefined``:
  a misspelt field is an error). As in lm-eval, a *list* ``doc_to_choice`` is literal, a template may render a
  Python list literal, and a target that renders to digits is a choice index.
* ``target_delimiter`` (default " ") goes between context and answer; ``fewshot_delimiter`` (default "\\n\\n")
  after each solved few-shot example; ``description`` is prepended once.
* ``num_fewshot`` with ``fewshot_source`` (``first_n`` sampler: the first k documents, lm-eval's MMLU rule).
* ``generation``: ``until`` (stop strings) and ``max_gen_toks``.
* ``process_docs``: the name of a document processor in ``processors.py`` (for what templates cannot express).
* ``finetune``: ``text`` template for the fine-tuning protocol (label = ``doc_to_target``).
* ``include``: a file (same folder) whose keys this file overrides; ``expand``: ``{var: [values]}`` makes one task
  per value, with ``{{var}}`` substituted in ``task``, ``group``, ``description`` and source file paths (MMLU's
  57 subjects are one file).

Files whose name starts with ``_`` are include-only templates and are not registered.
"""
from __future__ import annotations

import ast
import copy
import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from harness.data.base import DataContext
from harness.downstream.sources import Source, parse_source
from harness.registry import Registry, UnknownNameError

OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "generate_until")
TASK_DIR = Path(__file__).resolve().parent.parent / "data" / "tasks"
DEFAULT_METRICS = {
    "multiple_choice": ("acc", "acc_norm"),
    "loglikelihood": ("acc", "perplexity"),
    "generate_until": ("exact_match", "f1"),
}
_KEYS = {
    "task", "group", "about", "output_type", "source", "doc_to_text", "doc_to_target", "doc_to_choice",
    "target_delimiter", "fewshot_delimiter", "description", "num_fewshot", "fewshot_source", "fewshot_sampler",
    "metrics", "generation", "process_docs", "finetune", "include", "expand",
}


@dataclass(frozen=True)
class Generation:
    until: tuple[str, ...] = ("\n",)
    max_gen_toks: int = 32


@dataclass(frozen=True)
class TaskSpec:
    """One task, parsed from a task file (see the module doc for each field's meaning)."""

    name: str
    output_type: str
    source: Source
    doc_to_text: str
    doc_to_target: str
    doc_to_choice: tuple[str, ...] | str | None = None
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    description: str = ""
    num_fewshot: int = 0
    fewshot_source: Source | None = None
    fewshot_sampler: str = "first_n"
    metrics: tuple[str, ...] = ()
    generation: Generation = field(default_factory=Generation)
    process_docs: str | None = None
    finetune_text: str | None = None
    group: str | None = None
    about: str = ""
    file: str = ""

    def availability(self, ctx: DataContext) -> str | None:
        """None if the task's documents (and few-shot documents) can be read in ``ctx``, else the reason."""
        reasons = [self.source.availability(ctx, self.name)]
        if self.num_fewshot > 0 and self.fewshot_source is not None:
            reasons.append(self.fewshot_source.availability(ctx, f"{self.name} (few-shot examples)"))
        found = [r for r in reasons if r is not None]
        return "; also ".join(found) if found else None

    def with_fewshot(self, k: int) -> "TaskSpec":
        return replace(self, num_fewshot=k)


@dataclass(frozen=True)
class TaskGroup:
    """A named set of tasks (``mmlu`` = its 57 subjects); results are reported per task and averaged."""

    name: str
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    """One rendered request: what the model is asked, the answer strings, and the gold answer.

    ``choices`` are the answer strings without the delimiter (what ``acc_norm`` measures); the scored
    continuations are ``target_delimiter + choice``. ``gold`` is a choice index, or the gold answers of a
    generation task.
    """

    task: str
    doc_id: int
    context: str
    choices: tuple[str, ...]
    target_delimiter: str
    gold: int | tuple[str, ...]

    @property
    def continuations(self) -> tuple[str, ...]:
        return tuple(self.target_delimiter + c for c in self.choices)


# ------------------------------------------------------------------------------------------ templates
@functools.lru_cache(maxsize=None)
def _env():
    import re

    from jinja2 import BaseLoader, Environment, StrictUndefined

    env = Environment(loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(pattern, repl, s, count=count)
    return env


@functools.lru_cache(maxsize=4096)
def _template(text: str):
    return _env().from_string(text)


def render(template: str, doc: Mapping[str, Any]) -> str:
    return _template(template).render(**doc)


def _field_or_template(spec: str, doc: Mapping[str, Any]) -> Any:
    return doc[spec] if spec in doc else render(spec, doc)


def doc_to_text(task: TaskSpec, doc: Mapping[str, Any]) -> str:
    out = _field_or_template(task.doc_to_text, doc)
    if not isinstance(out, str):
        raise TypeError(f"{task.name}: doc_to_text gave {type(out).__name__}, not str")
    return out


def doc_to_choice(task: TaskSpec, doc: Mapping[str, Any]) -> list[str]:
    spec = task.doc_to_choice
    if spec is None:
        return []
    if isinstance(spec, tuple):
        return list(spec)
    out = _field_or_template(spec, doc)
    if isinstance(out, str):
        out = ast.literal_eval(out)
    return [str(c) for c in out]


def doc_to_target(task: TaskSpec, doc: Mapping[str, Any]) -> Any:
    out = _field_or_template(task.doc_to_target, doc)
    if isinstance(out, str):
        s = out.strip()
        if s.isdigit() and task.doc_to_choice is not None:
            return int(s)
        if s.startswith("[") and s.endswith("]"):
            try:
                return list(ast.literal_eval(s))
            except (ValueError, SyntaxError):
                return out
    if isinstance(out, bool):
        return int(out)
    return out


def gold_index(task: TaskSpec, doc: Mapping[str, Any], choices: Sequence[str]) -> int:
    """The gold choice index of a multiple-choice document (a target string is looked up in the choices)."""
    t = doc_to_target(task, doc)
    if isinstance(t, str):
        if t not in choices:
            raise ValueError(f"{task.name}: target {t!r} is not one of the choices {list(choices)}")
        return list(choices).index(t)
    t = int(t)
    if not 0 <= t < len(choices):
        raise ValueError(f"{task.name}: target index {t} out of range for {len(choices)} choices")
    return t


def answer_text(task: TaskSpec, doc: Mapping[str, Any]) -> str:
    """The gold answer as text (for few-shot examples): the gold choice, or the first gold answer."""
    if task.output_type == "multiple_choice":
        choices = doc_to_choice(task, doc)
        return choices[gold_index(task, doc, choices)]
    t = doc_to_target(task, doc)
    return t[0] if isinstance(t, list) else str(t)


# ------------------------------------------------------------------------------------------ examples
def load_docs(task: TaskSpec, ctx: DataContext, *, fewshot: bool = False) -> tuple[list[dict[str, Any]], str]:
    """Documents of the task (or its few-shot pool), processed, and where they came from."""
    from harness.downstream.processors import get_processor

    source = task.fewshot_source if fewshot else task.source
    if source is None:
        raise ValueError(f"{task.name}: no fewshot_source for num_fewshot={task.num_fewshot}")
    docs, origin = source.read(ctx, task.name)
    if task.process_docs:
        docs = [get_processor(task.process_docs)(d) for d in docs]
    return docs, origin


def make_example(task: TaskSpec, doc: Mapping[str, Any], doc_id: int,
                 shots: Sequence[Mapping[str, Any]] = ()) -> Example:
    """Render one document (lm-eval's plain-text ``fewshot_context``): description, then each solved shot as
    ``text + target_delimiter + answer + fewshot_delimiter``, then this document's text."""
    parts = [task.description]
    for s in shots:
        parts.append(doc_to_text(task, s) + task.target_delimiter + answer_text(task, s) + task.fewshot_delimiter)
    parts.append(doc_to_text(task, doc))
    context = "".join(parts)
    if task.output_type == "multiple_choice":
        choices = doc_to_choice(task, doc)
        return Example(task.name, doc_id, context, tuple(choices), task.target_delimiter,
                       gold_index(task, doc, choices))
    if task.output_type == "loglikelihood":
        target = doc_to_target(task, doc)
        return Example(task.name, doc_id, context, (str(target),), "", 0)
    golds = doc_to_target(task, doc)
    golds = tuple(golds) if isinstance(golds, (list, tuple)) else (str(golds),)
    return Example(task.name, doc_id, context, (), task.target_delimiter, golds)


def build_examples(task: TaskSpec, ctx: DataContext, limit: int | None = None) -> tuple[list[Example], str]:
    """All (or the first ``limit``) examples of a task, and where its documents came from."""
    docs, origin = load_docs(task, ctx)
    shots: list[Mapping[str, Any]] = []
    if task.num_fewshot > 0:
        pool, _ = load_docs(task, ctx, fewshot=True)
        if len(pool) < task.num_fewshot:
            raise ValueError(f"{task.name}: {task.num_fewshot}-shot needs {task.num_fewshot} few-shot documents, "
                             f"the pool has {len(pool)}")
        shots = pool[: task.num_fewshot]  # first_n; the pool is a different split, so no overlap to remove
    n = len(docs) if limit is None else min(limit, len(docs))
    return [make_example(task, docs[i], i, shots) for i in range(n)], origin


# ------------------------------------------------------------------------------------------ task files
def _substitute(obj: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(obj, str):
        return render(obj, variables) if "{{" in obj else obj
    if isinstance(obj, list):
        return [_substitute(x, variables) for x in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, variables) for k, v in obj.items()}
    return obj


def _expand_static(raw: dict[str, Any], variables: Mapping[str, str]) -> dict[str, Any]:
    """Substitute expansion variables into the fields that are not per-document templates."""
    out = copy.deepcopy(raw)
    for key in ("task", "group", "description", "about"):
        if isinstance(out.get(key), str):
            out[key] = render(out[key], variables)
    for key in ("source", "fewshot_source"):
        if out.get(key):
            out[key] = _substitute(out[key], variables)
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise ValueError(f"include cycle: {' -> '.join(str(p) for p in seen + (path,))}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a task file is a mapping")
    extra = set(raw) - _KEYS
    if extra:
        raise ValueError(f"{path}: unknown keys {sorted(extra)}; allowed: {sorted(_KEYS)}")
    inc = raw.pop("include", None)
    if inc:
        base = _read_yaml(path.parent / inc, seen + (path,))
        base.update(raw)
        raw = base
    return raw


def parse_task(raw: Mapping[str, Any], file: str = "") -> TaskSpec:
    """A task mapping (one expansion) -> ``TaskSpec``."""
    missing = [k for k in ("task", "output_type", "source", "doc_to_text", "doc_to_target") if k not in raw]
    if missing:
        raise ValueError(f"{file or raw.get('task')}: missing keys {missing}")
    otype = raw["output_type"]
    if otype not in OUTPUT_TYPES:
        raise ValueError(f"{raw['task']}: output_type {otype!r}; known: {', '.join(OUTPUT_TYPES)}")
    choice = raw.get("doc_to_choice")
    if otype == "multiple_choice" and choice is None:
        raise ValueError(f"{raw['task']}: multiple_choice needs doc_to_choice")
    gen = raw.get("generation") or {}
    until = gen.get("until", ["\n"])
    source = parse_source(raw["source"])
    assert source is not None
    return TaskSpec(
        name=str(raw["task"]),
        output_type=otype,
        source=source,
        doc_to_text=str(raw["doc_to_text"]),
        doc_to_target=str(raw["doc_to_target"]),
        doc_to_choice=tuple(str(c) for c in choice) if isinstance(choice, list) else choice,
        target_delimiter=str(raw.get("target_delimiter", " ")),
        fewshot_delimiter=str(raw.get("fewshot_delimiter", "\n\n")),
        description=str(raw.get("description", "")),
        num_fewshot=int(raw.get("num_fewshot", 0)),
        fewshot_source=parse_source(raw.get("fewshot_source")),
        fewshot_sampler=str(raw.get("fewshot_sampler", "first_n")),
        metrics=tuple(raw.get("metrics") or DEFAULT_METRICS[otype]),
        generation=Generation(tuple([until] if isinstance(until, str) else until), int(gen.get("max_gen_toks", 32))),
        process_docs=raw.get("process_docs"),
        finetune_text=(raw.get("finetune") or {}).get("text"),
        group=raw.get("group"),
        about=str(raw.get("about", "")).strip(),
        file=file,
    )


def load_task_file(path: str | Path) -> list[TaskSpec]:
    """Every task a file defines (one per ``expand`` value, or one)."""
    path = Path(path)
    raw = _read_yaml(path)
    expand = raw.pop("expand", None)
    if not expand:
        return [parse_task(raw, str(path))]
    if len(expand) != 1:
        raise ValueError(f"{path}: expand takes one variable, got {sorted(expand)}")
    (var, values), = expand.items()
    return [parse_task(_expand_static(raw, {var: str(v)}), str(path)) for v in values]


# ------------------------------------------------------------------------------------------ registry
class TaskRegistry(Registry):
    """``Registry`` of ``TaskSpec`` and ``TaskGroup`` entries whose error message lists groups compactly (MMLU
    alone has 114 task names)."""

    def _unknown_message(self, shown: str) -> str:
        groups = {n: e for n, e in self._entries.items() if isinstance(e, TaskGroup)}
        in_group = {t for g in groups.values() for t in g.tasks}
        singles = [n for n in sorted(self._entries) if n not in in_group and n not in groups]
        grouped = [f"{g} (group of {len(e.tasks)}: {e.tasks[0]}, ...)" for g, e in sorted(groups.items())]
        return f"unknown task {shown!r}; valid tasks: {', '.join(singles + grouped)}"


TASKS: TaskRegistry = TaskRegistry("task", allow_import_strings=False)


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task (and its group) to ``TASKS``."""
    TASKS.add(spec.name, spec)
    if spec.group:
        g = TASKS._entries.get(spec.group)
        if g is None:
            TASKS.add(spec.group, TaskGroup(spec.group, (spec.name,)))
        elif isinstance(g, TaskGroup):
            TASKS._entries[spec.group] = TaskGroup(g.name, g.tasks + (spec.name,))
        else:
            raise ValueError(f"group {spec.group!r} clashes with a task of that name")
    return spec


def register_task_file(path: str | Path) -> list[TaskSpec]:
    return [register_task(s) for s in load_task_file(path)]


def _register_builtin() -> None:
    for path in sorted(TASK_DIR.glob("*.yaml")):
        if not path.name.startswith("_"):
            register_task_file(path)


def get_task(name: str) -> TaskSpec:
    entry = TASKS.get(name)
    if not isinstance(entry, TaskSpec):
        raise UnknownNameError(f"{name!r} is a group of {len(entry.tasks)} tasks; use resolve_tasks() or a task name")
    return entry


def resolve_tasks(names: Iterable[str]) -> list[TaskSpec]:
    """Task names and group names -> task specs, in order, groups expanded. One error lists every bad name."""
    names = TASKS.validate(list(names))
    out: list[TaskSpec] = []
    for n in names:
        e = TASKS.get(n)
        out.extend([get_task(t) for t in e.tasks] if isinstance(e, TaskGroup) else [e])
    return out


def task_names(include_groups: bool = True) -> list[str]:
    return sorted(n for n, e in TASKS._entries.items() if include_groups or isinstance(e, TaskSpec))


def task_availability(name: str, ctx: DataContext) -> str | None:
    """None if every task ``name`` stands for can be loaded in ``ctx``, else the first one-line reason (the
    benchmark skips with it; it names the files expected under the data directory)."""
    for spec in resolve_tasks([name]):
        reason = spec.availability(ctx)
        if reason is not None:
            return reason
    return None


_register_builtin()
