"""lm-evaluation-harness bridge: any lmbench model plus its tokenizer as an ``lm_eval.api.model.LM``.

Registered in lm-eval's model registry as ``lmbench`` when this module is imported. lm-eval 0.4.13 discovers
models only through its own ``MODEL_MAPPING`` and ``@register_model`` in modules that have been imported (there is
no entry-point plugin lookup), so the command line goes through this module::

    python -m harness.adapters.lm_eval run --model lmbench \\
        --model_args model=transformer,tokenizer=byte,max_length=128,weights=path/to/model.safetensors \\
        --tasks piqa --include_path my_tasks/

or, from Python, pass an instance (no registry involved)::

    from harness.adapters.lm_eval import LMBenchLM
    lm = LMBenchLM(model=my_module, tokenizer=my_tokenizer, max_length=128)
    lm_eval.simple_evaluate(model=lm, tasks=[...], task_manager=TaskManager(include_path=...))

Design: the adapter subclasses lm-eval's ``TemplateLM``, so lm-eval's own code splits context and continuation
(``_encode_pair``: trailing spaces moved, joint encoding split at the context length) and handles empty contexts;
only token scoring is delegated, to lmbench's ``score_token_pairs`` (the same function lmbench's task runner uses).
Rolling log-likelihoods use lm-eval's own window planner (``get_rolling_token_windows`` with ``context_len=1``, as
its HF model does). ``tok_encode`` is ``encode_text`` (the ``word`` tokenizer's final ``<eos>`` rule), and the
end-of-text / prefix token is ``default_prefix_token_id``.

Generation is greedy only (``do_sample``/``temperature`` are ignored with a warning) and stops at the task's
``until`` strings; unlike lm-eval's HF model, the end-of-text string is not added as a stop sequence (for the byte
tokenizer it would be a newline).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:
    import lm_eval.models  # noqa: F401  (registers lm-eval's built-in models first; see _register)
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import model_registry, register_model
except ImportError as exc:  # pragma: no cover - only without the optional dependency
    raise ImportError(f"harness.adapters.lm_eval needs lm-evaluation-harness: pip install 'lm-eval==0.4.13' ({exc})"
                      ) from exc

from harness.data.base import Corpus, DataContext, Tokenizer
from harness.downstream.encoding import default_prefix_token_id, encode_text
from harness.downstream.scorer import greedy_generate, score_token_pairs

log = logging.getLogger(__name__)
NAME = "lmbench"


class LMBenchLM(TemplateLM):
    """An lmbench ``ids -> logits`` model and a ``Tokenizer`` as an lm-eval LM.

    ``model`` / ``tokenizer`` are objects, or names (the command line's ``--model_args``): ``model`` a model
    registry name built with ``budget`` at ``max_length`` positions and loaded from ``weights`` (a
    ``.safetensors`` file from lmbench's weight cache; without it the model is randomly initialised with
    ``seed``, which is only useful for plumbing checks), ``tokenizer`` a tokenizer registry name (a trained one,
    ``word`` or ``bpe-<V>``, needs ``dataset``).
    """

    backend = "causal"

    def __init__(
        self,
        model: nn.Module | str = "transformer",
        tokenizer: Tokenizer | str = "byte",
        max_length: int | None = None,
        batch_size: int | str | None = 16,
        device: str | None = "cpu",
        prefix_token_id: int | None = None,
        max_gen_toks: int = 32,
        budget: str = "smoke",
        weights: str | None = None,
        dataset: str | None = None,
        data_dir: str | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            log.warning("lmbench LM: ignoring unknown arguments %s", sorted(kwargs))
        ctx = _context(data_dir)
        self.tok: Tokenizer = _build_tokenizer(tokenizer, dataset, ctx) if isinstance(tokenizer, str) else tokenizer
        if max_length is None:
            raise ValueError("lmbench LM: max_length (the model's maximum context, e.g. its training seq_len) "
                             "is required")
        self._max_length = int(max_length)
        self._device = _pick_device(device)
        if isinstance(model, str):
            model = _build_model(model, self.tok.vocab_size, self._max_length, budget, weights, seed)
            self._model_name = f"{model.__class__.__name__}:{weights or f'random(seed={seed})'}"
        else:
            self._model_name = model.__class__.__name__
        self.model = model.to(self._device).eval()
        self._batch_size = int(batch_size) if str(batch_size).isdigit() else 16
        self._prefix = int(prefix_token_id) if prefix_token_id is not None else default_prefix_token_id(self.tok)
        self._max_gen_toks = int(max_gen_toks)

    # ------------------------------------------------------------------------------------ properties lm-eval reads
    @property
    def eot_token_id(self) -> int:
        return self._prefix

    @property
    def prefix_token_id(self) -> int:
        return self._prefix

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tok, "name", type(self.tok).__name__)

    def get_model_info(self) -> dict[str, Any]:
        return {"lmbench_model": self._model_name, "lmbench_tokenizer": self.tokenizer_name,
                "max_length": self._max_length, "prefix_token_id": self._prefix}

    # ------------------------------------------------------------------------------------ tokenization
    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return encode_text(self.tok, string)

    def tok_decode(self, tokens: list[int], **kwargs: Any) -> str:
        return self.tok.decode(tokens)

    # ------------------------------------------------------------------------------------ requests
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        scores = score_token_pairs(self.model, [(r[1], r[2]) for r in requests], self._max_length,
                                   self._batch_size, self._device)
        out = []
        for req, s in zip(requests, scores):
            answer = (s.logprob, s.is_greedy)
            if req[0] is not None:
                self.cache_hook.add_partial("loglikelihood", req[0], answer)
            out.append(answer)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows: list[tuple[None, list[int], list[int]]] = []
        owner: list[int] = []
        for i, (string,) in enumerate(r.args for r in requests):
            for ctx, cont in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self._prefix,
                    max_seq_len=self._max_length, context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, self._loglikelihood_tokens(windows)):
            totals[i] += ll
        for r, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for r in requests:
            context, gen_kwargs = r.args
            gen_kwargs = dict(gen_kwargs or {})
            if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature", 0.0) or 0.0) > 0:
                log.warning("lmbench LM generates greedily; ignoring do_sample/temperature")
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_gen = int(gen_kwargs.get("max_gen_toks", self._max_gen_toks))
            ids = self.tok_encode(context) or [self._prefix]
            text = greedy_generate(self.model, self.tok, ids, until, max_gen, self._max_length, self._device)
            self.cache_hook.add_partial("generate_until", (context, r.args[1]), text)
            out.append(text)
        return out


def _pick_device(device: str | None) -> torch.device:
    """lm-eval's command line asks for ``cuda`` by default; without CUDA, run on the CPU and say so."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        log.warning("lmbench LM: device %s requested but CUDA is unavailable; using cpu", device)
        return torch.device("cpu")
    return dev


def _context(data_dir: str | None) -> DataContext:
    from harness.data.cache import default_context

    ctx = default_context()
    return ctx if data_dir is None else DataContext(Path(data_dir), ctx.cache_dir, ctx.allow_hub)


def _build_tokenizer(name: str, dataset: str | None, ctx: DataContext) -> Tokenizer:
    from harness.data import build_tokenizer, get_tokenizer_spec, load_corpus

    spec = get_tokenizer_spec(name)
    if spec.trained:
        if not dataset:
            raise ValueError(f"tokenizer {name!r} is trained on a corpus: pass dataset=<name> in --model_args")
        corpus = load_corpus(dataset, ctx)
    else:
        corpus = Corpus(name="none", splits={"train": "", "valid": "", "test": ""}, source="embedded")
    return build_tokenizer(name, corpus, ctx)


def _build_model(name: str, vocab_size: int, max_length: int, budget: str, weights: str | None, seed: int) -> nn.Module:
    from harness.models import get_model_spec

    spec = get_model_spec(name)
    torch.manual_seed(seed)
    model = spec.build(spec.config(vocab_size=vocab_size, max_seq_len=max_length, budget=budget))
    if weights:
        from safetensors.torch import load_model

        load_model(model, weights)
    else:
        log.warning("lmbench LM: no weights= given; %s is randomly initialised (seed %d)", name, seed)
    return model


def _register() -> None:
    """Register ``lmbench`` once (re-importing this module under another name must not raise)."""
    if model_registry.get(NAME, None) is None:
        register_model(NAME)(LMBenchLM)


_register()


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with ``lmbench`` registered: ``python -m harness.adapters.lm_eval run ...``."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
