"""Judge prompts and their strict parsers.

Both templates put every reference answer in one prompt, so one call judges a prediction against all of them (one
call per reference would multiply the cost by the number of references and lose list-type answers). ``match``
says how the references combine: ``any`` (QA: each reference is an acceptable answer) or ``all`` (RULER-style
sets: the prediction must give every one).

Parsing never looks for a substring: MemFactory rewarded any reply containing "True", so "Not True" and
"True or False" scored 1. A reply that is not exactly one label is no verdict (``None``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from memfactory_cli.errors import UserError, did_you_mean
from memfactory_cli.modules.text import after_thinking

MATCH_MODES = {
    "any": "The predicted answer is correct if it agrees with any one of the reference answers.",
    "all": "The predicted answer is correct only if it gives every one of the reference answers.",
}


def parse_binary(text: str) -> bool | None:
    """``True`` / ``False`` (any case, optionally quoted, bolded or followed by a full stop), nothing else."""
    word = after_thinking(text).strip("`*\"' \n").removesuffix(".").lower()
    return {"true": True, "false": False}.get(word)


def _json_values(text: str, key: str) -> set[str]:
    """The distinct values (as JSON text) of ``key`` over every JSON object embedded in the reply."""
    body = after_thinking(text)
    decoder = json.JSONDecoder()
    values = set()
    start = body.find("{")
    while start >= 0:
        try:
            obj, end = decoder.raw_decode(body, start)
        except json.JSONDecodeError:
            start = body.find("{", start + 1)
            continue
        if isinstance(obj, dict) and key in obj:
            values.add(json.dumps(obj[key]))
        start = body.find("{", end)
    return values


_LABELS = {"CORRECT": True, "WRONG": False}


def parse_correct_wrong(text: str) -> bool | None:
    """The one ``label`` of the JSON object(s) in the reply: exactly ``CORRECT`` or ``WRONG``.

    The reason sentence may precede the JSON and a code fence may wrap it. Two objects with different labels, a
    lower-case label or a label outside JSON give no verdict.
    """
    values = _json_values(text, "label")
    label = json.loads(values.pop()) if len(values) == 1 else None
    return _LABELS.get(label) if isinstance(label, str) else None


def parse_labels(text: str, n: int) -> list[bool | None]:
    """Groupwise: one ``labels`` list of exactly ``n`` entries; a list of another length is no verdict for any
    answer (it cannot be aligned), an entry that is not exactly CORRECT/WRONG is no verdict for that answer."""
    values = _json_values(text, "labels")
    labels = json.loads(values.pop()) if len(values) == 1 else None
    if not isinstance(labels, list) or len(labels) != n:
        return [None] * n
    return [_LABELS.get(label) if isinstance(label, str) else None for label in labels]


_BINARY_PROMPT = """Decide whether the predicted answer to the question is correct, given the reference answers. \
{rule}

Question: {question}
Reference answers:
{references}
Predicted answer: {prediction}

Output only True or False."""

_GENEROUS = """Be generous about form: a longer answer that names the same thing as a reference is CORRECT, and so \
is a date or time written differently (for example "7 May" and "May 7th") or described relative to the same \
period. An answer about something else, or one that hedges between alternatives, is WRONG."""

_CORRECT_WRONG_PROMPT = """Label the predicted answer to a question as CORRECT or WRONG against the reference \
answers. {rule}

""" + _GENEROUS + """

Question: {question}
Reference answers:
{references}
Predicted answer: {prediction}

First write one sentence explaining your reasoning. Then give the label as JSON with the key "label", either \
{{"label": "CORRECT"}} or {{"label": "WRONG"}}. Do not write both labels."""

_GROUP_PROMPT = """Label each of the {n} predicted answers to a question as CORRECT or WRONG against the reference \
answers. {rule} Judge every answer on its own, not against the others.

""" + _GENEROUS + """

Question: {question}
Reference answers:
{references}
Predicted answers:
{predictions}

For each predicted answer in order, write one sentence explaining your reasoning. Then give the labels, in the \
same order, as JSON with the key "labels": a list of exactly {n} strings, each "CORRECT" or "WRONG", for example \
{{"labels": ["CORRECT", "WRONG"]}}."""


def parse_yes_no(text: str) -> bool | None:
    """LongMemEval's verdict: ``yes`` / ``no`` (any case, optionally with a full stop), nothing else. (LongMemEval's
    own script takes any reply containing "yes", so "no, not yes" would count as correct there.)"""
    word = after_thinking(text).strip("`*\"' \n").removesuffix(".").lower()
    return {"yes": True, "no": False}.get(word)


# LongMemEval's answer-check prompts (xiaowu0162/LongMemEval src/evaluation/evaluate_qa.py, get_anscheck_prompt;
# MIT License, Copyright (c) 2024 Di Wu), verbatim so the metric is LongMemEval's, by question type; "abstention" is
# the prompt of its ``_abs`` questions.
_LME_INTRO = "I will give you a question, a correct answer, and a response from a model. Please answer yes if the response contains the correct answer. Otherwise, answer no. If the response is equivalent to the correct answer or contains all the intermediate steps to get the correct answer, you should also answer yes. If the response only contains a subset of the information required by the answer, answer no. "
_LME_BODY = "\n\nQuestion: {question}\n\nCorrect Answer: {answer}\n\nModel Response: {response}\n\nIs the model response correct? Answer yes or no only."
LONGMEMEVAL_PROMPTS = {
    "single-session-user": _LME_INTRO + _LME_BODY,
    "temporal-reasoning": _LME_INTRO + "In addition, do not penalize off-by-one errors for the number of days. If the question asks for the number of days/weeks/months, etc., and the model makes off-by-one errors (e.g., predicting 19 days when the answer is 18), the model's response is still correct. " + _LME_BODY,
    "knowledge-update": "I will give you a question, a correct answer, and a response from a model. Please answer yes if the response contains the correct answer. Otherwise, answer no. If the response contains some previous information along with an updated answer, the response should be considered as correct as long as the updated answer is the required answer." + _LME_BODY,
    "single-session-preference": "I will give you a question, a rubric for desired personalized response, and a response from a model. Please answer yes if the response satisfies the desired response. Otherwise, answer no. The model does not need to reflect all the points in the rubric. The response is correct as long as it recalls and utilizes the user's personal information correctly.\n\nQuestion: {question}\n\nRubric: {answer}\n\nModel Response: {response}\n\nIs the model response correct? Answer yes or no only.",
    "abstention": "I will give you an unanswerable question, an explanation, and a response from a model. Please answer yes if the model correctly identifies the question as unanswerable. The model could say that the information is incomplete, or some other information is given but the asked information is not.\n\nQuestion: {question}\n\nExplanation: {answer}\n\nModel Response: {response}\n\nDoes the model correctly identify the question as unanswerable? Answer yes or no only.",
}
for _task in ("single-session-assistant", "multi-session"):
    LONGMEMEVAL_PROMPTS[_task] = LONGMEMEVAL_PROMPTS["single-session-user"]


@dataclass(frozen=True)
class Template:
    """A named prompt with its parser; ``version`` changes whenever the wording does, so old cache entries miss.

    A ``groupwise`` template judges all of a question's predictions in one call (``max_tokens`` per prediction);
    the others judge one prediction per call.
    """

    name: str
    version: int
    prompt: str
    parser: Callable[[str, int], list[bool | None]]
    max_tokens: int
    groupwise: bool = False
    system: str = "You are an impartial judge."
    # per-task prompts (LongMemEval: one per question type); a task not listed gets ``prompt``
    by_task: dict[str, str] | None = None

    def key(self, match: str) -> str:
        return f"{self.name}/v{self.version}/{match}"

    def budget(self, n: int) -> int:
        return self.max_tokens * n if self.groupwise else self.max_tokens

    def messages(
        self, question: str, references: list[str], predictions: list[str], match: str, task: str | None = None
    ) -> list[dict[str, str]]:
        if self.by_task is not None:  # LongMemEval: one user message, its own wording, one reference answer
            (response,) = predictions
            text = self.by_task.get(task or "", self.prompt).format(question=question, answer=" / ".join(references), response=response)
            return [{"role": "user", "content": text}]
        fields = {"rule": MATCH_MODES[match], "question": question, "references": "\n".join(f"- {r}" for r in references)}
        if self.groupwise:
            fields.update(n=len(predictions), predictions="\n".join(f"{i}. {p}" for i, p in enumerate(predictions, 1)))
        else:
            (fields["prediction"],) = predictions
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.prompt.format(**fields)}]

    def parse(self, text: str, n: int) -> list[bool | None]:
        return self.parser(text, n)


def _single(parse: Callable[[str], bool | None]) -> Callable[[str, int], list[bool | None]]:
    return lambda text, n: [parse(text)]


TEMPLATES = {
    "binary": Template("binary", 1, _BINARY_PROMPT, _single(parse_binary), max_tokens=16),
    "correct_wrong": Template("correct_wrong", 1, _CORRECT_WRONG_PROMPT, _single(parse_correct_wrong), max_tokens=160),
    "correct_wrong_group": Template("correct_wrong_group", 1, _GROUP_PROMPT, parse_labels, max_tokens=96, groupwise=True),
    # LongMemEval's QA accuracy: the prompt of each question's type (``question_type``; ``abstention`` rows get the
    # unanswerable-question prompt); an unknown type gets the single-session one. 10 tokens, as LongMemEval.
    "longmemeval": Template(
        "longmemeval", 1, LONGMEMEVAL_PROMPTS["single-session-user"], _single(parse_yes_no), max_tokens=10,
        by_task=LONGMEMEVAL_PROMPTS,
    ),
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise UserError(f"llm_judge: unknown template '{name}'{did_you_mean(name, TEMPLATES)}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
