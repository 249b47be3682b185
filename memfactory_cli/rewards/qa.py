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
_DROP_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower().translate(_DROP_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


_WORD = re.compile(r"\S+")


def reference_spans(text: str, references: list[str]) -> list[tuple[int, int]]:
    """Character spans of ``text`` where a reference occurs after normalisation, as whole normalised words.

    ``normalize_answer`` works word by word (it never joins or splits whitespace-separated words, except that an
    article or pure punctuation vanishes), so normalising each word of ``text`` on its own gives the same word
    sequence as normalising the whole text, and a match there maps back to the raw words it came from (without the
    punctuation around them). Whole words: "Paris" is in "I moved to Paris." but not in "Parisian". Sorted,
    overlapping spans merged.
    """
    words: list[tuple[str, int, int]] = []
    punct = string.punctuation
    for m in _WORD.finditer(text):
        raw = m.group()
        core = raw.strip(punct) or raw  # the span leaves out punctuation around the word: "Lisbon." marks "Lisbon"
        start = m.start() + (len(raw) - len(raw.lstrip(punct)) if core is not raw else 0)
        words += [(w, start, start + len(core)) for w in normalize_answer(raw).split()]
    tokens = [w for w, _, _ in words]
    spans = []
    for ref in references:
        target = normalize_answer(str(ref)).split()
        n = len(target)
        if n:
            spans += [(words[i][1], words[i + n - 1][2]) for i in range(len(tokens) - n + 1) if tokens[i : i + n] == target]
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def holds_reference(text: str, references: list[str]) -> bool:
    """Whether any reference occurs in ``text``: the match of :func:`reference_spans`, found on the normalised text
    as a whole (no spans to map back), which is what retention needs for every chunk and memory of a run."""
    padded = f" {normalize_answer(text)} "
    return any((g := normalize_answer(str(r))) and f" {g} " in padded for r in references)


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
