"""Named document processors for what a template cannot say (a task file names one in ``process_docs``).

Kept few and small: each mirrors the preprocessing of the corresponding lm-evaluation-harness task so the
rendered prompts are the same strings.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from harness.registry import Registry

Doc = dict[str, Any]
PROCESSORS: Registry[Callable[[Doc], Doc]] = Registry("document processor", allow_import_strings=True)


def _hellaswag_clean(text: str) -> str:
    text = text.strip()
    text = text.replace(" [title]", ". ")  # WikiHow artefacts, as lm-eval's hellaswag/utils.py
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


@PROCESSORS.register("hellaswag")
def hellaswag(doc: Doc) -> Doc:
    """lm-eval's HellaSwag ``process_docs``: query = activity label + context, cleaned endings, int label."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {**doc, "query": _hellaswag_clean(doc["activity_label"] + ": " + ctx),
            "choices": [_hellaswag_clean(e) for e in doc["endings"]], "gold": int(doc["label"])}


def get_processor(name: str) -> Callable[[Doc], Doc]:
    return PROCESSORS.get(name)
