"""Options: raw option strings → validated ``Options``, with every mistake reported before anything runs.

Why in the library and not in the pytest plugin: a Python API (notebooks, the Ray launcher, ``harness compare``)
builds the same cells from the same options without pytest, and every caller gets the same one-line errors.
``OptionsError`` messages are shown to users as is: one line that names the bad value and the valid ones.
"""
from __future__ import annotations

import datetime as _dt
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.config import BUDGET_NAMES, BudgetError, get_budget
from harness.env import REPO_ROOT

BITS_CHOICES = ("fp32", "fp16", "bf16", "int8", "int4", "int3", "int2")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
AUTOCAST_CHOICES = ("bf16",)
DEFAULT_DATASETS = ("synthetic-markov",)
TARGETS_DIR = REPO_ROOT / "fixtures" / "targets"


class OptionsError(ValueError):
    """A bad option value; the message is one line naming the fix."""


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
        return {"bits": self.bits is not None, "seq_len": self.seq_lens is not None}.get(axis, True)

    def public(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def new_run_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def parse_seeds(value: str | None) -> list[int]:
    seeds: list[int] = []
    for part in split_list(value):
        try:
            if "-" in part.lstrip("-"):
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise OptionsError(f"--seeds {value!r}: expected integers like 0,1,2 or a range like 0-4") from None
    if not seeds:
        raise OptionsError("--seeds is empty: give e.g. --seeds 0 or --seeds 0,1,2")
    return seeds


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
) -> Options:
    """Validate raw option values (as typed on the command line) into ``Options``; ``OptionsError`` otherwise.

    Checks every name against its registry, every preset against the budget, every length against the budget's
    tokens, and whether explicitly named datasets and the tokenizer's files exist — before anything is trained.
    """
    from harness.data import DATASETS, dataset_availability, default_cache_dir, default_data_dir, validate_dataset_names
    from harness.data.base import DataContext
    from harness.data.tokenizers import TOKENIZERS, tokenizer_availability
    from harness.models import MODELS, PresetError, default_model_names, get_model_spec
    from harness.registry import UnknownNameError

    if budget not in BUDGET_NAMES:
        raise OptionsError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGET_NAMES)}")
    if device not in DEVICE_CHOICES:
        raise OptionsError(f"--device {device!r}: valid devices: {', '.join(DEVICE_CHOICES)}")
    if gpu:
        device = "cuda"
    elif device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise OptionsError(f"--device cuda: torch {torch.__version__} sees no CUDA device here; "
                               "use --device cpu (or auto), or run on a machine with an NVIDIA GPU")
    model_names = list(MODELS.names_registered()) if models == "all" else (split_list(models) or default_model_names())
    dataset_names = list(DATASETS.names_registered()) if datasets == "all" else (
        split_list(datasets) or list(DEFAULT_DATASETS))
    bit_list = split_list(bits) if bits is not None else None
    bad_bits = [b for b in bit_list or [] if b not in BITS_CHOICES]
    if bad_bits or bit_list == []:
        raise OptionsError(f"unknown bits {', '.join(bad_bits) or '(empty)'}; valid: {', '.join(BITS_CHOICES)}")
    group = _positive_int(group_size, "--group-size")
    act = _positive_int(act_bits, "--act-bits")
    if act not in (None, 8):
        raise OptionsError(f"--act-bits {act_bits}: only 8 (dynamic int8 activations) is supported")
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
    for name in model_names:
        spec = get_model_spec(name)
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

    run_id = run_id or new_run_id()
    root = results_root or REPO_ROOT / "reports" / "results"
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir().resolve()
    data = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    if data is not None and not data.is_dir():
        raise OptionsError(f"--data-dir {data} is not a folder; point it (or LMBENCH_DATA_DIR) at your data")
    targets = Path(targets_dir).expanduser().resolve() if targets_dir else TARGETS_DIR
    if not targets.is_dir():
        raise OptionsError(f"--targets-dir {targets} is not a folder of target files (fixtures/targets/*.toml)")
    ctx = DataContext(data_dir=data, cache_dir=cache, allow_hub=hub)
    reason = tokenizer_availability(tokenizer, ctx)
    if reason:
        raise OptionsError(f"tokenizer {tokenizer} is not available: {reason}")

    explicit = bool(datasets) and datasets != "all"
    unavailable: dict[str, str] = {}
    for name in dataset_names:
        reason = dataset_availability(name, ctx)
        if reason:
            if explicit:
                raise OptionsError(f"dataset {name} is not available: {reason}")
            unavailable[name] = reason
    return Options(
        models=model_names, datasets=dataset_names, tokenizer=tokenizer, seeds=parse_seeds(seeds), bits=bit_list,
        seq_lens=lengths, budget=budget, device=device, gpu=gpu, data_dir=data,
        results_dir=Path(results_dir).expanduser().resolve() if results_dir else root / run_id,
        cache_dir=cache, targets_dir=targets, allow_hub=hub, run_id=run_id, worker=worker,
        datasets_explicit=explicit, unavailable=unavailable, group_size=group, act_bits=act, quant_include=include,
        cell_timeout=timeout,
        grad_checkpoint=bool(grad_checkpoint), autocast=autocast, memory_tasks=task_names,
    )


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
