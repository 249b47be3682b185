"""Memory-R1 scores and rewards.

The scores (EM, token F1, BLEU-1) compare a *parsed* final answer with every reference; the Memory-R1 agent computes
them during its rollout, because the memory manager's outcome is the score of a frozen answer agent's answers on the
bank the manager's operations produced: no function of the manager's own completion could compute it. The agent puts
the scores in ``Trajectory.extras["mr1_outcome"]`` and the validity of the turn in ``extras["mr1_format"]``; the two
registered rewards only read them, so the metric (EM or F1) is chosen in YAML.

BLEU-1 is the clipped unigram precision times the brevity penalty over normalised tokens (what nltk's
``sentence_bleu(weights=(1,))`` computes for one reference); nltk is not a dependency, so it is written out here.
"""

from __future__ import annotations

import math
from collections import Counter

from memfactory_cli.errors import UserError
from memfactory_cli.registry import register
from memfactory_cli.rewards.qa import em, f1, normalize_answer

ANSWER_METRICS = ("em", "f1", "bleu1")


def _bleu1(prediction: str, reference: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not p or not g:
        return 0.0
    clipped = sum((Counter(p) & Counter(g)).values())
    brevity = 1.0 if len(p) > len(g) else math.exp(1 - len(g) / len(p))
    return brevity * clipped / len(p)


def bleu1(prediction: str | None, references: list[str]) -> float:
    if prediction is None:
        return 0.0
    return max(_bleu1(prediction, r) for r in references)


def gold(references: list[str]) -> list[str]:
    """The references that can score an answer: non-empty text (a blank gold answer scores nothing)."""
    return [str(r) for r in references if str(r).strip()]


def answer_scores(answer: str | None, references: list[str]) -> dict[str, float | None]:
    """Every answer metric of one parsed answer. No answer given (None) is the model's miss: all zero. No gold
    answer to compare with is no score at all: all ``None``, so a missing reference never reads as a wrong answer."""
    refs = gold(references)
    if not refs:
        return dict.fromkeys(ANSWER_METRICS)
    return {"em": em(answer, refs), "f1": f1(answer, refs), "bleu1": bleu1(answer, refs)}


@register("reward", "memory_r1_outcome")
def memory_r1_outcome(prompts, completions, mr1_outcome=None, metric: str = "em", **kwargs) -> list[float | None]:
    """The task outcome of the trajectory: for the memory manager, the mean score of the frozen answer agent over the
    questions linked to the turn; for the answer agent, the score of its own answer. ``metric``: em | f1 | bleu1."""
    if metric not in ANSWER_METRICS:
        raise UserError(f"memory_r1_outcome.metric must be one of {', '.join(ANSWER_METRICS)}, not '{metric}'")
    if mr1_outcome is None:
        return [None] * len(completions)
    return [None if o is None or o[metric] is None else float(o[metric]) for o in mr1_outcome]


@register("reward", "memory_r1_format")
def memory_r1_format(prompts, completions, mr1_format=None, **kwargs) -> list[float | None]:
    """1.0 when the turn was well formed: a valid operation plan (manager), an answer after the marker (answer agent)."""
    if mr1_format is None:
        return [None] * len(completions)
    return [None if ok is None else float(bool(ok)) for ok in mr1_format]
