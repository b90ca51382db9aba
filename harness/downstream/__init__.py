"""Downstream evaluation: tasks as data, one scorer, per-example results, the fine-tuning protocol.

    from harness.downstream import get_task, evaluate_task, ScoringConfig, task_availability, write_jsonl
    reason = task_availability("piqa", ctx)          # None, or why it cannot run (files expected)
    result = evaluate_task(model, tokenizer, get_task("piqa"), ctx, ScoringConfig(max_len=128))
    result.metrics, result.intervals["acc"], write_jsonl(result.examples, "piqa.jsonl")

Modules: ``tasks`` (task files, registry, rendering), ``sources`` (files / Hub), ``encoding`` (context /
continuation split), ``scorer`` (token log-likelihoods, greedy generation), ``evaluate`` (task runner),
``results`` (per-example records, aggregation), ``metrics``, ``finetune``, ``synthetic`` (controls). See
docs/downstream.md.
"""
from harness.downstream.encoding import EncodedPair, default_prefix_token_id, encode_pair, encode_text
from harness.downstream.evaluate import ScoringConfig, evaluate_task, score_examples
from harness.downstream.finetune import (
    FinetuneRecipe,
    FinetuneResult,
    classification_data,
    finetune_cv,
    kfold_split,
    locate_features,
)
from harness.downstream.metrics import (
    Interval,
    binary_f1,
    bootstrap_interval,
    choice_predictions,
    exact_match,
    token_f1,
    wilson_interval,
)
from harness.downstream.results import (
    ExampleResult,
    GroupResult,
    TaskResult,
    aggregate,
    aggregate_group,
    read_jsonl,
    write_jsonl,
)
from harness.downstream.scorer import TokenScore, greedy_generate, score_token_pairs
from harness.downstream.synthetic import (
    shuffle_class_labels,
    shuffle_labels,
    synthetic_choice_task,
    synthetic_classification,
)
from harness.downstream.tasks import (
    TASKS,
    Example,
    TaskGroup,
    TaskSpec,
    build_examples,
    get_task,
    load_task_file,
    register_task,
    register_task_file,
    resolve_tasks,
    task_availability,
    task_names,
)

__all__ = [
    "TASKS", "EncodedPair", "Example", "ExampleResult", "FinetuneRecipe", "FinetuneResult", "GroupResult",
    "Interval", "ScoringConfig", "TaskGroup", "TaskResult", "TaskSpec", "TokenScore", "aggregate", "aggregate_group",
    "binary_f1", "bootstrap_interval", "build_examples", "choice_predictions", "classification_data",
    "default_prefix_token_id", "encode_pair", "encode_text", "evaluate_task", "exact_match", "finetune_cv",
    "get_task", "greedy_generate", "kfold_split", "load_task_file", "locate_features", "read_jsonl",
    "register_task", "register_task_file", "resolve_tasks", "score_examples", "score_token_pairs",
    "shuffle_class_labels", "shuffle_labels", "synthetic_choice_task", "synthetic_classification",
    "task_availability", "task_names", "token_f1", "wilson_interval", "write_jsonl",
]
