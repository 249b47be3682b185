"""Answer extraction and QA scores (EM, sub-EM, F1, string_match_all), against every reference answer.

Normalisation is MemAgent's evaluation normalisation (SQuAD's ``normalize_answer``): lowercase, drop ASCII
punctuation and the articles a/an/the, collapse whitespace.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

from memfactory_cli.modules.text import after_thinking
from memfactory_cli.registry import register
from memfactory_cli.rewards.base import completion_text

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces balanced), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = start + len("\\boxed")
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def extract_answer(completion: Any) -> str | None:
    """The boxed answer after any thinking, or None when the model gave none."""
    return last_boxed(after_thinking(completion_text(completion)))


def em(prediction: str | None, references: list[str]) -> float:
    if prediction is None:
        return 0.0
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(r) for r in references))


def sub_em(prediction: str | None, references: list[str]) -> float:
    if prediction is None:
        return 0.0
    p = normalize_answer(prediction)
    return float(any((g := normalize_answer(r)) and (g in p or (p and p in g)) for r in references))


def _f1(prediction: str, reference: str) -> float:
    p, g = normalize_answer(prediction), normalize_answer(reference)
    special = ("yes", "no", "noanswer")
    if (p in special or g in special) and p != g:
        return 0.0
    common = Counter(p.split()) & Counter(g.split())
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p.split()), same / len(g.split())
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str | None, references: list[str]) -> float:
    if prediction is None:
        return 0.0
    return max(_f1(prediction, r) for r in references)


def string_match_all(prediction: str | None, references: list[str]) -> float:
    """RULER's score: the fraction of references found (case-insensitively) in the prediction."""
    if prediction is None:
        return 0.0
    low = prediction.lower()
    return sum(r.lower() in low for r in references) / len(references)


METRICS = {"em": em, "sub_em": sub_em, "f1": f1, "string_match_all": string_match_all}


# RULER replies are often unboxed lists of words: that metric falls back to the whole reply.
RAW_FALLBACK = {"string_match_all"}


def score_text(metric: str, text: Any, references: list[str]) -> float:
    """Score one reply (str or chat completion) with a named metric against all references."""
    prediction = extract_answer(text)
    if prediction is None and metric in RAW_FALLBACK:
        prediction = after_thinking(completion_text(text))
    return METRICS[metric](prediction, list(references))


def _score(metric: str, completions: list[Any], answers: list[list[str]] | None) -> list[float | None]:
    if answers is None:
        return [None] * len(completions)
    return [score_text(metric, c, refs) if refs else None for c, refs in zip(completions, answers)]


@register("reward", "exact_match")
def exact_match_reward(prompts, completions, answers=None, **kwargs) -> list[float | None]:
    """1.0 when the boxed answer equals any reference after normalisation."""
    return _score("em", completions, answers)


@register("reward", "sub_em")
def sub_em_reward(prompts, completions, answers=None, **kwargs) -> list[float | None]:
    """1.0 when a normalised reference is inside the boxed answer, or the answer inside a reference."""
    return _score("sub_em", completions, answers)


@register("reward", "f1")
def f1_reward(prompts, completions, answers=None, **kwargs) -> list[float | None]:
    """Best token-level F1 of the boxed answer over the references."""
    return _score("f1", completions, answers)


@register("reward", "string_match_all")
def string_match_all_reward(prompts, completions, answers=None, **kwargs) -> list[float | None]:
    """RULER: fraction of references in the answer (boxed, else the whole reply)."""
    return _score("string_match_all", completions, answers)
