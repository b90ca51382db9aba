"""Fine-tuning protocol (SST-2, MRPC, BoolQ): one recipe for every model, a classification head on the final
hidden state of the last token, k-fold cross-validation on the dev set.

Hidden-state access. lmbench models return logits only, so the features are taken with a *forward hook*, chosen
by ``locate_features`` in this order:

1. ``hidden_module=`` given by the caller: that module's output;
2. the input of the output projection: the last ``nn.Linear`` named ``lm_head`` or ``head`` (Hugging Face GPT-2,
   LLaMA, Mamba, the test toys), read with a forward *pre*-hook;
3. the output of a final norm named ``ln_f`` / ``norm_f`` / ``final_norm`` (ResNet-BK, whose head is a tied
   ``F.linear`` with no module of its own);
4. otherwise the log-softmax of the logits (recorded as ``feature_source="logits"``).

Why the head's input and not the logits: it is the d-dimensional state every architecture has right before the
vocabulary projection, so the classifier has the same size for every model of a budget; logit features are
V-dimensional (50,257 for GPT-2 BPE), make the head's size depend on the tokenizer, and, with a tied head, are
a rank-d linear map of the same state anyway. Logits remain the fallback so that any ``ids -> logits`` module
can be fine-tuned.

The last token: texts are encoded (``encode_text``), truncated from the *left* to ``max_len`` (the end of the
text, e.g. BoolQ's question after its passage, is kept), right-padded, and the feature at index ``length - 1``
is classified; a causal model's state there does not depend on the padding.

Recipe (``FinetuneRecipe``, recorded with every result): AdamW on all parameters (backbone and head, one learning
rate), linear warmup over ``warmup_frac`` of the steps then linear decay to 0, gradient clipping, a fixed number
of steps with batches drawn by a seeded permutation. **No early stopping**: the model after the last step is
evaluated once on its held-out fold (with only dev data on disk, any checkpoint selection would be made on the
data it is scored on).

Data: only the dev sets are on disk for all three tasks, so they are split into ``n_folds`` folds by a seeded
permutation (``fold_seed``, recorded with the fold sizes and a hash of the permutation). Each fold is scored by a
model fine-tuned on the other folds, so each seed's accuracy is over every dev example exactly once (or over the
folds run, if ``folds`` limits them). Seeds change the head's initialisation and the batch order, not the split.
"""
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from harness.data.base import DataContext, Tokenizer
from harness.downstream.encoding import default_prefix_token_id, encode_text
from harness.downstream.metrics import binary_f1, wilson_interval
from harness.downstream.tasks import TaskSpec, doc_to_choice, gold_index, load_docs, render

EARLY_STOPPING = "none: fixed steps; the model after the last step is evaluated once on its held-out fold"
_HEAD_NAMES = ("lm_head", "head")
_NORM_NAMES = ("ln_f", "norm_f", "final_norm")


@dataclass(frozen=True)
class FinetuneRecipe:
    """Every knob of the protocol (module doc). Defaults are the recipe; a benchmark records ``to_dict()``."""

    steps: int = 300
    lr: float = 3e-4
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    grad_clip: float = 1.0
    max_len: int = 128
    seeds: tuple[int, ...] = (0, 1, 2)
    n_folds: int = 5
    fold_seed: int = 0
    folds: tuple[int, ...] | None = None  # which folds to run (None = all)
    freeze_backbone: bool = False  # True: a linear probe on frozen features

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["early_stopping"] = EARLY_STOPPING
        return d


# ------------------------------------------------------------------------------------------ k-fold split
@dataclass(frozen=True)
class FoldSplit:
    """Test indices of each fold (a seeded permutation cut into near-equal parts) and a fingerprint of it."""

    n: int
    seed: int
    test_indices: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> list[int]:
        return [len(f) for f in self.test_indices]

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(repr(self.test_indices).encode()).hexdigest()
        return h[:16]

    def train_indices(self, fold: int) -> list[int]:
        held = set(self.test_indices[fold])
        return [i for i in range(self.n) if i not in held]

    def describe(self) -> dict[str, Any]:
        return {"n": self.n, "k": len(self.test_indices), "seed": self.seed, "sizes": self.sizes,
                "sha256_16": self.fingerprint, "rule": "numpy default_rng(seed).permutation(n), np.array_split"}


def kfold_split(n: int, k: int, seed: int) -> FoldSplit:
    if not 2 <= k <= n:
        raise ValueError(f"need 2 <= k <= n, got k={k}, n={n}")
    perm = np.random.default_rng(seed).permutation(n)
    return FoldSplit(n, seed, tuple(tuple(int(i) for i in part) for part in np.array_split(perm, k)))


# ------------------------------------------------------------------------------------------ features
@dataclass(frozen=True)
class FeatureSource:
    kind: str  # "module_output" | "head_input" | "logits"
    module: str  # qualified module name ("" for logits)


def locate_features(model: nn.Module, hidden_module: str | None = None) -> FeatureSource:
    """Where the final hidden state is read (module doc, rules 1-4)."""
    modules = dict(model.named_modules())
    if hidden_module is not None:
        if hidden_module not in modules:
            raise ValueError(f"no module {hidden_module!r} in {type(model).__name__}")
        return FeatureSource("module_output", hidden_module)
    heads = [n for n, m in modules.items() if isinstance(m, nn.Linear) and n.split(".")[-1] in _HEAD_NAMES]
    if heads:
        return FeatureSource("head_input", heads[-1])
    norms = [n for n in modules if n.split(".")[-1] in _NORM_NAMES]
    if norms:
        return FeatureSource("module_output", norms[-1])
    return FeatureSource("logits", "")


class FeatureExtractor(nn.Module):
    """``ids (B, T) -> features (B, T, d)`` of a logits-only model, via a hook at ``source``."""

    def __init__(self, model: nn.Module, source: FeatureSource) -> None:
        super().__init__()
        self.model = model
        self.source = source
        self._captured: torch.Tensor | None = None
        self._handle = None
        if source.kind == "head_input":
            self._handle = dict(model.named_modules())[source.module].register_forward_pre_hook(self._pre_hook)
        elif source.kind == "module_output":
            self._handle = dict(model.named_modules())[source.module].register_forward_hook(self._hook)

    def close(self) -> None:
        """Remove the hook (the wrapped model is left as it was)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _pre_hook(self, module: nn.Module, args: tuple) -> None:
        self._captured = args[0]

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._captured = output[0] if isinstance(output, tuple) else output

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self._captured = None
        logits = self.model(ids)
        if self.source.kind == "logits":
            return torch.log_softmax(logits.float(), dim=-1)
        if self._captured is None:
            raise RuntimeError(f"the hook on {self.source.module!r} did not fire")
        feats, self._captured = self._captured, None
        return feats


class LastTokenClassifier(nn.Module):
    """Features at each sequence's last real token -> linear head -> class logits."""

    def __init__(self, model: nn.Module, n_classes: int, source: FeatureSource, feature_dim: int) -> None:
        super().__init__()
        self.features = FeatureExtractor(model, source)
        self.head = nn.Linear(feature_dim, n_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.features(ids)
        last = h[torch.arange(ids.shape[0], device=ids.device), lengths - 1]
        return self.head(last.float())


def feature_dim(model: nn.Module, source: FeatureSource, device: torch.device | str = "cpu") -> int:
    ext = FeatureExtractor(model, source)
    try:
        with torch.no_grad():
            return int(ext(torch.zeros((1, 1), dtype=torch.long, device=device)).shape[-1])
    finally:
        ext.close()


# ------------------------------------------------------------------------------------------ data
def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """Ids per text, left-truncated to ``max_len``; an empty text becomes the prefix token."""
    prefix = default_prefix_token_id(tokenizer)
    return [(encode_text(tokenizer, t) or [prefix])[-max_len:] for t in texts]


def _batch(seqs: Sequence[Sequence[int]], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.as_tensor([len(s) for s in seqs], dtype=torch.long)
    x = torch.zeros((len(seqs), int(lengths.max())), dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return x.to(device), lengths.to(device)


def classification_data(task: TaskSpec, ctx: DataContext, limit: int | None = None) -> tuple[list[str], list[int], int]:
    """Texts (the task's ``finetune.text`` template), labels (its gold choice index) and the number of classes."""
    if task.finetune_text is None:
        raise ValueError(f"{task.name} has no finetune section in its task file")
    docs, _ = load_docs(task, ctx)
    docs = docs[:limit] if limit is not None else docs
    texts = [render(task.finetune_text, d) for d in docs]
    labels = [gold_index(task, d, doc_to_choice(task, d)) for d in docs]
    return texts, labels, len(doc_to_choice(task, docs[0]))


# ------------------------------------------------------------------------------------------ results
@dataclass
class FoldResult:
    seed: int
    fold: int
    n_train: int
    n_test: int
    acc: float
    final_train_loss: float
    test_indices: list[int]
    predictions: list[int]


@dataclass
class SeedResult:
    seed: int
    n: int
    acc: float
    acc_low: float
    acc_high: float
    f1: float | None
    folds: list[FoldResult]


@dataclass
class FinetuneResult:
    task: str
    recipe: dict[str, Any]
    feature_source: FeatureSource
    split: dict[str, Any]
    majority_rate: float  # accuracy of always predicting the most frequent class (the floor to beat)
    seeds: list[SeedResult] = field(default_factory=list)

    @property
    def accs(self) -> list[float]:
        return [s.acc for s in self.seeds]

    def summary(self) -> dict[str, Any]:
        accs = self.accs
        return {
            "task": self.task, "recipe": self.recipe, "feature_source": asdict(self.feature_source),
            "split": self.split, "majority_rate": self.majority_rate,
            "acc_per_seed": accs, "f1_per_seed": [s.f1 for s in self.seeds],
            "acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
        }


# ------------------------------------------------------------------------------------------ training
def _lr_at(step: int, recipe: FinetuneRecipe) -> float:
    warm = max(1, int(round(recipe.warmup_frac * recipe.steps)))
    if step < warm:
        return recipe.lr * (step + 1) / warm
    return recipe.lr * max(0.0, (recipe.steps - step) / max(1, recipe.steps - warm))


def train_fold(
    model: nn.Module,
    train_ids: Sequence[Sequence[int]],
    train_labels: Sequence[int],
    n_classes: int,
    recipe: FinetuneRecipe,
    seed: int,
    source: FeatureSource,
    device: torch.device | str = "cpu",
) -> tuple[LastTokenClassifier, float]:
    """Fine-tune a *copy* of ``model`` with a fresh head; returns the classifier and its last-10-step loss."""
    torch.manual_seed(seed)
    backbone = copy.deepcopy(model).to(device)
    clf = LastTokenClassifier(backbone, n_classes, source, feature_dim(backbone, source, device)).to(device)
    if recipe.freeze_backbone:
        for p in backbone.parameters():
            p.requires_grad_(False)
    params = [p for p in clf.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    labels = torch.as_tensor(list(train_labels), dtype=torch.long)
    losses: list[float] = []
    clf.train()
    for step in range(recipe.steps):
        while len(order) < recipe.batch_size:
            order.extend(rng.permutation(len(train_ids)).tolist())
        idx, order = order[: recipe.batch_size], order[recipe.batch_size :]
        x, lengths = _batch([train_ids[i] for i in idx], device)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, recipe)
        loss = nn.functional.cross_entropy(clf(x, lengths), labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            break
    clf.eval()
    return clf, float(np.mean(losses[-10:]))


@torch.no_grad()
def predict(clf: LastTokenClassifier, ids: Sequence[Sequence[int]], batch_size: int = 32,
            device: torch.device | str = "cpu") -> list[int]:
    clf.eval()
    out: list[int] = []
    for i in range(0, len(ids), batch_size):
        x, lengths = _batch(ids[i : i + batch_size], device)
        out.extend(clf(x, lengths).argmax(-1).tolist())
    return out


def finetune_cv(
    model: nn.Module,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    labels: Sequence[int],
    n_classes: int,
    recipe: FinetuneRecipe = FinetuneRecipe(),
    task: str = "",
    device: torch.device | str = "cpu",
    hidden_module: str | None = None,
) -> FinetuneResult:
    """The protocol (module doc) on texts and labels: per seed, k-fold fine-tune-and-predict, pooled accuracy
    with a Wilson interval, and binary F1 of class 1 for two-class tasks (MRPC's reported F1)."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts, {len(labels)} labels")
    source = locate_features(model, hidden_module)
    ids = encode_texts(tokenizer, texts, recipe.max_len)
    split = kfold_split(len(ids), recipe.n_folds, recipe.fold_seed)
    folds = recipe.folds if recipe.folds is not None else tuple(range(recipe.n_folds))
    counts = np.bincount(np.asarray(labels), minlength=n_classes)
    result = FinetuneResult(task, recipe.to_dict(), source, split.describe(), float(counts.max() / counts.sum()))
    for seed in recipe.seeds:
        fold_results: list[FoldResult] = []
        golds, preds = [], []
        for f in folds:
            tr, te = split.train_indices(f), list(split.test_indices[f])
            clf, loss = train_fold(model, [ids[i] for i in tr], [labels[i] for i in tr], n_classes, recipe,
                                   seed, source, device)
            p = predict(clf, [ids[i] for i in te], device=device)
            g = [labels[i] for i in te]
            fold_results.append(FoldResult(seed, f, len(tr), len(te), float(np.mean(np.asarray(p) == np.asarray(g))),
                                           loss, te, p))
            golds.extend(g)
            preds.extend(p)
        k = int(sum(int(a == b) for a, b in zip(golds, preds)))
        iv = wilson_interval(k, len(golds))
        f1 = binary_f1(golds, preds) if n_classes == 2 else None
        result.seeds.append(SeedResult(seed, len(golds), iv.value, iv.low, iv.high, f1, fold_results))
    return result
