"""Options: raw option strings → validated ``Options``, with every mistake reported before anything runs.

Why in the library and not in the pytest plugin: a Python API (notebooks, the Ray launcher, ``harness compare``)
builds the same cells from the same options without pytest, and every caller gets the same one-line errors.
``OptionsError`` messages are shown to users as is: one line that names the bad value and the valid ones.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.config import BUDGET_NAMES, BudgetError, get_budget
from harness.env import REPO_ROOT

BITS_CHOICES = ("fp32", "fp16", "bf16", "int8", "int4", "int3", "int2")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
LAUNCHERS = ("local", "ray")
AUTOCAST_CHOICES = ("bf16",)
DEFAULT_DATASETS = ("synthetic-markov",)
TARGETS_DIR = REPO_ROOT / "fixtures" / "targets"


MAX_SEED = 2**32 - 1  # numpy's and torch's seeding both take it; bigger ones are a typo
MAX_SEEDS = 1_000  # seeds per run: each trains every model once, so more is a typo (0-100000) or a runaway script


class OptionsError(ValueError):
    """A bad option value; the message is one line naming the fix."""


class LmbenchWarning(UserWarning):
    """Something the user asked for that lmbench changed or ignored (a duplicate seed dropped, an option no
    selected benchmark uses); the run goes on."""


@dataclass
class Options:
    models: list[str]
    datasets: list[str]
    tokenizer: str = "byte"
    seeds: list[int] = field(default_factory=lambda: [0])
    bits: list[str] | None = None  # None: the benchmark's default (fp32, or every width for quantization)
    seq_lens: list[int] | None = None  # None: the budget's training length
    budget: str = "smoke"
    device: str = "auto"  # as asked: auto | cpu | cuda
    gpu: bool = False
    data_dir: Path | None = None
    results_dir: Path = REPO_ROOT / "reports" / "results" / "run"
    cache_dir: Path = REPO_ROOT / ".lmbench-cache"
    targets_dir: Path = TARGETS_DIR
    allow_hub: bool = False
    run_id: str = "run"
    worker: str | None = None
    datasets_explicit: bool = False
    unavailable: dict[str, str] = field(default_factory=dict)  # dataset -> reason (skipped, not an error)
    cell_timeout: float | None = None  # seconds a cell may run before it is stopped and recorded as timeout
    grad_checkpoint: bool = False  # activation checkpointing in every training run (recorded in the recipe)
    autocast: str | None = None  # "bf16": bf16 autocast of forward and loss in every training run (CUDA)
    memory_tasks: list[str] = field(default_factory=list)  # synthetic memory tasks (default: every built-in one)
    group_size: int | None = None  # quantization: int4/3/2 group length (None: 128 for int4, 32 for <= 3 bits)
    act_bits: int | None = None  # quantization: 8 adds dynamic int8 activation quantization
    quant_include: tuple[str, ...] = ()  # quantization: also quantize "embeddings" and/or "head"
    warnings: list[str] = field(default_factory=list)  # one line each: shown once by the plugin, never fatal
    launcher: str = "local"  # local: this process (or xdist workers, -n); ray: each cell a Ray task
    ray_address: str | None = None  # None: a local Ray instance (or $RAY_ADDRESS, as Ray itself does)
    ray_cpus: int = 1  # CPUs each cell's Ray task requests (a CUDA cell requests one GPU)
    resume: Path | None = None  # the results folder of the run being resumed (then results_dir is that folder)
    resume_failed: bool = False  # also rerun cells whose record is a failure or error
    baseline: Path | None = None  # --baseline: the file records are gated against (harness/results/baseline.py)
    update_baseline: bool = False  # --update-baseline: write this run's passed cells into ``baseline`` at the end
    tasks: list[str] = field(default_factory=lambda: _default_tasks())  # downstream: task and group names
    limit: int | None = None  # downstream: examples per task (None: the budget's DownstreamConfig.limit)
    datasets_given: bool = False  # --datasets was passed (else a benchmark may use its own default datasets)

    @property
    def device_type(self) -> str:
        """"cpu" or "cuda": what cells record (which GPU index ran a cell is the launcher's business)."""
        if self.device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    @property
    def default_seq_len(self) -> int:
        return get_budget(self.budget).train.seq_len

    @property
    def long_seq_lens(self) -> list[int]:
        """The long-context sweep: ``--seq-lens`` if given, else the budget's default lengths."""
        return list(self.seq_lens or get_budget(self.budget).long_seq_lens or [self.default_seq_len])

    @property
    def train_overrides(self) -> dict[str, Any]:
        """Recipe switches every training run of the session gets (only those that are on)."""
        out: dict[str, Any] = {}
        if self.grad_checkpoint:
            out["grad_checkpoint"] = True
        if self.autocast:
            out["autocast"] = self.autocast
        return out

    def axis_values(self) -> dict[str, list[Any]]:
        """Values of every cell axis, as the options give them."""
        return {"model": self.models, "dataset": self.datasets, "seed": self.seeds,
                "seq_len": self.seq_lens or [self.default_seq_len], "bits": self.bits or ["fp32"]}

    def given(self, axis: str) -> bool:
        """Whether the user chose this axis's values (else a benchmark may use its own default)."""
        return {"bits": self.bits is not None, "seq_len": self.seq_lens is not None,
                "dataset": self.datasets_given or self.datasets != list(DEFAULT_DATASETS)}.get(axis, True)

    def public(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _default_tasks() -> list[str]:
    from harness.downstream.tasks import top_level_task_names

    return top_level_task_names()


def parse_tasks(value: str | None) -> list[str]:
    """``--tasks``: task and group names (default: every shipped task, a group counting as one). An unknown name
    is the task registry's own one-line error, listing the valid names."""
    from harness.downstream.tasks import resolve_tasks
    from harness.registry import UnknownNameError

    if value is None:
        return _default_tasks()
    names = list(dict.fromkeys(split_list(value)))
    if not names:
        raise OptionsError(f"--tasks {value!r} is empty: give task names, e.g. --tasks piqa,copa,mmlu")
    try:
        resolve_tasks(names)
    except UnknownNameError as exc:
        raise OptionsError(f"--tasks: {exc}") from None
    return names


def new_run_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


_SEED_PART = re.compile(r"^(-?\d+)(?:\s*-\s*(-?\d+))?$")


def parse_seeds(value: str | None, warnings: list[str] | None = None) -> list[int]:
    """``0,1,2`` or ranges ``0-4``: integers in ``[0, MAX_SEED]``, at most ``MAX_SEEDS``. A duplicate is dropped
    (with a line in ``warnings``): a seed measured twice would count twice in every statistic over seeds."""
    seeds: list[int] = []
    for part in split_list(value):
        m = _SEED_PART.match(part)
        if m is None:
            raise OptionsError(f"--seeds {value!r}: expected integers like 0,1,2 or a range like 0-4")
        lo = int(m[1])
        hi = int(m[2]) if m[2] is not None else lo
        for seed in (lo, hi):
            if not 0 <= seed <= MAX_SEED:
                raise OptionsError(f"--seeds {value!r}: seed {seed} is out of range; seeds are integers from 0 to "
                                   f"{MAX_SEED:,}")
        if hi < lo:
            raise OptionsError(f"--seeds {value!r}: the range {part} is reversed; write {hi}-{lo}")
        if len(seeds) + (hi - lo + 1) > MAX_SEEDS:
            raise OptionsError(f"--seeds {value!r}: {len(seeds) + hi - lo + 1:,} seeds; a run takes at most "
                               f"{MAX_SEEDS:,} (each seed trains every model once)")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise OptionsError("--seeds is empty: give e.g. --seeds 0 or --seeds 0,1,2")
    unique = list(dict.fromkeys(seeds))
    if len(unique) < len(seeds) and warnings is not None:
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        warnings.append(f"--seeds {value!r}: duplicate seed{'s' if len(dup) > 1 else ''} "
                        f"{', '.join(map(str, dup))} dropped (each seed is measured and counted once)")
    return unique


def _names(option: str, value: str | None, default: list[str], warnings: list[str]) -> list[str]:
    """A comma list of names: the default when the option is absent, an error when it is given but empty (a
    silent default would run something the user did not ask for), duplicates dropped with a warning."""
    if value is None:
        return list(default)
    names = split_list(value)
    if not names:
        raise OptionsError(f"{option} {value!r} is empty: give at least one name, or leave {option} out for the "
                           f"default ({', '.join(default)})")
    unique = list(dict.fromkeys(names))
    if len(unique) < len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        warnings.append(f"{option}: {', '.join(dup)} given more than once; each runs once")
    return unique


def parse_lengths(value: str | None, option: str = "--seq-lens") -> list[int] | None:
    if value is None:
        return None
    try:
        out = [int(v) for v in split_list(value)]
    except ValueError:
        raise OptionsError(f"{option} {value!r}: expected a comma list of integers, e.g. 256,1024") from None
    if not out or any(v < 2 for v in out):
        raise OptionsError(f"{option} {value!r}: give sequence lengths >= 2")
    return out


def parse_options(
    *,
    models: str | None = None,
    datasets: str | None = None,
    tokenizer: str = "byte",
    seeds: str = "0",
    bits: str | None = None,
    seq_lens: str | None = None,
    budget: str = "smoke",
    device: str = "auto",
    gpu: bool = False,
    data_dir: str | os.PathLike | None = None,
    results_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    targets_dir: str | os.PathLike | None = None,
    hub: bool = False,
    run_id: str | None = None,
    worker: str | None = None,
    results_root: Path | None = None,
    cell_timeout: str | float | None = None,
    grad_checkpoint: bool = False,
    autocast: str | None = None,
    memory_tasks: str | None = None,
    group_size: int | str | None = None,
    act_bits: int | str | None = None,
    quant_include: str | None = None,
    launcher: str = "local",
    ray_address: str | None = None,
    ray_cpus: int | str | None = None,
    resume: str | os.PathLike | None = None,
    resume_failed: bool = False,
    baseline: str | os.PathLike | None = None,
    update_baseline: bool = False,
    tasks: str | None = None,
    limit: int | str | None = None,
) -> Options:
    """Validate raw option values (as typed on the command line) into ``Options``; ``OptionsError`` otherwise.

    Checks every name against its registry, every preset against the budget, every length against the budget's
    tokens, and whether explicitly named datasets and the tokenizer's files exist — before anything is trained.
    """
    from harness.data import (
        DATASETS,
        canonical_dataset_name,
        dataset_availability,
        default_cache_dir,
        default_data_dir,
        get_dataset_spec,
        validate_dataset_names,
    )
    from harness.data.base import DataContext
    from harness.data.tokenizers import TOKENIZERS, tokenizer_availability
    from harness.models import MODELS, PresetError, default_model_names, get_model_spec
    from harness.registry import UnknownNameError

    notes: list[str] = []

    if budget not in BUDGET_NAMES:
        raise OptionsError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGET_NAMES)}")
    if device not in DEVICE_CHOICES:
        raise OptionsError(f"--device {device!r}: valid devices: {', '.join(DEVICE_CHOICES)}")
    if launcher not in LAUNCHERS:
        raise OptionsError(f"--launcher {launcher!r}: valid launchers: local (this process, or xdist workers with "
                           "-n), ray (each cell a Ray task)")
    if launcher != "ray" and (ray_address or ray_cpus is not None):
        raise OptionsError(f"{'--ray-address' if ray_address else '--ray-cpus'} only applies to Ray: "
                           "add --launcher ray (or drop it)")
    cpus = _positive_int(ray_cpus, "--ray-cpus") or 1
    if launcher == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise OptionsError("--launcher ray needs Ray, which is not installed here: "
                               "pip install 'lmbench[ray]' (or pip install ray)")
    if resume_failed and not resume:
        raise OptionsError("--resume-failed needs --resume RESULTS_DIR (the folder of the run to resume)")
    if gpu:
        device = "cuda"
    elif device == "cuda" and launcher != "ray":  # under Ray the cluster's GPUs count (checked on connecting)
        import torch

        if not torch.cuda.is_available():
            raise OptionsError(f"--device cuda: torch {torch.__version__} sees no CUDA device here; "
                               "use --device cpu (or auto), or run on a machine with an NVIDIA GPU")
    model_names = list(MODELS.names_registered()) if models == "all" else (
        _names("--models", models, default_model_names(), notes))
    dataset_names = list(DATASETS.names_registered()) if datasets == "all" else (
        _names("--datasets", datasets, list(DEFAULT_DATASETS), notes))
    canonical = list(dict.fromkeys(canonical_dataset_name(n) for n in dataset_names))
    if len(canonical) < len(dataset_names):  # text:DIR and text:DIR/ are one dataset
        notes.append(f"--datasets: {', '.join(dataset_names)} name the same dataset more than once; each runs once")
    dataset_names = canonical
    seed_list = parse_seeds(seeds, notes)
    bit_list = split_list(bits) if bits is not None else None
    bad_bits = [b for b in bit_list or [] if b not in BITS_CHOICES]
    if bad_bits or bit_list == []:
        raise OptionsError(f"unknown bits {', '.join(bad_bits) or '(empty)'}; valid: {', '.join(BITS_CHOICES)}")
    group = _positive_int(group_size, "--group-size")
    act = _positive_int(act_bits, "--act-bits")
    if act not in (None, 8):
        raise OptionsError(f"--act-bits {act_bits}: only 8 (dynamic int8 activations) is supported")
    task_list = parse_tasks(tasks)
    n_limit = _positive_int(limit, "--limit")
    include = tuple(split_list(quant_include))
    if set(include) - {"embeddings", "head"}:
        raise OptionsError(f"--quant-include {quant_include!r}: valid parts: embeddings, head")
    try:
        MODELS.validate(model_names)
        validate_dataset_names(dataset_names)
        TOKENIZERS.validate([tokenizer])
    except UnknownNameError as exc:
        raise OptionsError(str(exc)) from None
    preset = get_budget(budget).preset
    specs = {}
    for name in model_names:
        try:
            specs[name] = spec = get_model_spec(name)
        except UnknownNameError as exc:
            raise OptionsError(str(exc)) from None
        try:
            spec.preset_for(preset, budget)
        except PresetError as exc:
            if not spec.fixed_shape:  # a fixed published shape is skipped at other budgets (Session.skip_reason)
                raise OptionsError(str(exc)) from None
    lengths = parse_lengths(seq_lens)
    train = get_budget(budget).train
    long_train = get_budget(budget).long_recipe
    for length in lengths or []:
        try:
            _ = train.at_seq_len(length).steps  # raises when the length does not fit the budget
            _ = long_train.at_seq_len(length).steps  # the long-context recipe too
        except BudgetError as exc:
            raise OptionsError(f"--seq-lens {length}: {exc}") from None
    timeout = parse_timeout(cell_timeout)
    if autocast is not None and autocast not in AUTOCAST_CHOICES:
        raise OptionsError(f"--autocast {autocast!r}: valid: {', '.join(AUTOCAST_CHOICES)} (or leave it out for fp32)")
    if autocast is not None and device != "cuda" and not (device == "auto" and _cuda_available()):
        raise OptionsError(f"--autocast {autocast} is for CUDA devices (CPU autocast saves little memory and changes "
                           "the numerics): drop it, or run with --gpu / --device cuda on a GPU machine")
    task_names = validate_memory_tasks(memory_tasks, lengths or [get_budget(budget).train.seq_len])
    if worker is None:  # the controller checks; xdist workers get options it already accepted
        for name, spec in specs.items():
            if _is_import_string(name) and spec.pretrained is None:
                _check_user_model(name, spec, preset, max(lengths or [train.seq_len]), device)

    run_id = run_id or new_run_id()
    root = results_root or REPO_ROOT / "reports" / "results"
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir().resolve()
    data = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    if data is not None and not data.is_dir():
        raise OptionsError(f"--data-dir {data} is not a folder; point it (or LMBENCH_DATA_DIR) at your data")
    targets = Path(targets_dir).expanduser().resolve() if targets_dir else TARGETS_DIR
    if not targets.is_dir():
        raise OptionsError(f"--targets-dir {targets} is not a folder of target files (fixtures/targets/*.toml)")
    from harness.provision.weights import untrusted_reason

    for folder in (cache, cache / "weights", cache / "torch_extensions"):
        reason = untrusted_reason(folder)
        if reason:
            raise OptionsError(f"--cache-dir: {reason}")
    ctx = DataContext(data_dir=data, cache_dir=cache, allow_hub=hub)
    try:
        reason = tokenizer_availability(tokenizer, ctx)
    except UnknownNameError as exc:
        raise OptionsError(str(exc)) from None
    if reason:
        raise OptionsError(f"tokenizer {tokenizer} is not available: {reason}")

    if update_baseline and not baseline:
        raise OptionsError("--update-baseline needs --baseline PATH: the baseline file to write "
                           "(e.g. --baseline reports/baselines/mine.json --update-baseline)")

    explicit = bool(datasets) and datasets != "all"
    unavailable: dict[str, str] = {}
    for name in dataset_names:
        try:
            spec = get_dataset_spec(name)
            reason = dataset_availability(name, ctx)
        except UnknownNameError as exc:
            raise OptionsError(str(exc)) from None
        except Exception as exc:  # a user's loader failing in its own way: one line, not a traceback
            raise OptionsError(f"dataset {name}: checking it raised {_one_line(exc)}") from None
        if not reason and tokenizer == "word" and not spec.words:
            reason = (f"--tokenizer word: dataset {name} has no words (a stream of symbols without spaces); use "
                      f"--tokenizer byte or bpe-<V>, or a text dataset")
            if explicit or datasets is None:
                raise OptionsError(reason)
        if reason:
            if explicit:
                raise OptionsError(f"dataset {name} is not available: {reason}")
            unavailable[name] = reason
    return Options(
        models=model_names, datasets=dataset_names, tokenizer=tokenizer, seeds=seed_list, bits=bit_list,
        seq_lens=lengths, budget=budget, device=device, gpu=gpu, data_dir=data,
        results_dir=Path(results_dir).expanduser().resolve() if results_dir else root / run_id,
        cache_dir=cache, targets_dir=targets, allow_hub=hub, run_id=run_id, worker=worker,
        datasets_explicit=explicit, unavailable=unavailable, group_size=group, act_bits=act, quant_include=include,
        warnings=notes,
        launcher=launcher, ray_address=ray_address or None, ray_cpus=cpus,
        resume=Path(resume).expanduser().resolve() if resume else None, resume_failed=bool(resume_failed),
        baseline=Path(baseline).expanduser().resolve() if baseline else None, update_baseline=update_baseline,
        tasks=task_list, limit=n_limit, datasets_given=bool(datasets),
        cell_timeout=timeout,
        grad_checkpoint=bool(grad_checkpoint), autocast=autocast, memory_tasks=task_names,
    )


def _is_import_string(name: str) -> bool:
    return ":" in name and not name.startswith(("hf:", "text:"))


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _check_user_model(name: str, spec: Any, preset: str, seq_len: int, device: str) -> None:
    """A model given as an import string is built once (vocabulary 256) and run on a tiny batch before anything
    trains: a builder returning None, a model without parameters or one whose logits are not (batch, length,
    vocab) is a usage error now, not a traceback (or a wrong number) minutes later."""
    import torch

    from harness.errors import ModelContractError
    from harness.models import build_checked, check_output_contract

    # CUDA where it will run (without CUDA, --gpu and --device cuda are refused or skipped elsewhere: check on CPU)
    target = "cuda" if device in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            torch.manual_seed(0)
            module = build_checked(spec, spec.config(256, seq_len, preset), name).to(target)
            check_output_contract(module, 256, seq_len, name, target)
    except ModelContractError as exc:
        raise OptionsError(str(exc)) from None
    except Exception as exc:
        raise OptionsError(f"--models {name}: building it raised {_one_line(exc)}") from None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def parse_timeout(value: str | float | None) -> float | None:
    """``--cell-timeout``: seconds (a positive number), or None/"none" for no limit."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "0")):
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise OptionsError(f"--cell-timeout {value!r}: expected seconds, e.g. 600 (or none)") from None
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise OptionsError(f"--cell-timeout {value!r}: give a positive number of seconds (or none)")
    return seconds


def validate_memory_tasks(value: str | None, lengths: list[int]) -> list[str]:
    """``--memory-tasks``: names in the synthetic task registry, each laid out in every training length given."""
    from harness.data.memory_tasks import DEFAULT_TASKS, TASKS, get_task
    from harness.registry import UnknownNameError

    names = split_list(value) or list(DEFAULT_TASKS)
    try:
        TASKS.validate(names)
        tasks = [get_task(n) for n in names]
    except (UnknownNameError, ValueError) as exc:
        raise OptionsError(f"--memory-tasks: {exc}") from None
    for task in tasks if value else ():  # default tasks too long for a length are skipped with a reason instead
        short = [n for n in lengths if n < task.min_len()]
        if short:
            raise OptionsError(f"--memory-tasks {task.name} needs sequences of at least {task.min_len()} tokens; "
                               f"length {short[0]} is shorter: give longer --seq-lens or a smaller task")
    return names


def _positive_int(value: int | str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise OptionsError(f"{option} {value!r}: expected a positive integer") from None
    if out < 1:
        raise OptionsError(f"{option} {value!r}: expected a positive integer")
    return out
