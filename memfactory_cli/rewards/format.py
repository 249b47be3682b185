"""The format reward: a boxed answer is present and every memory update stayed within its token budget."""

from __future__ import annotations

from memfactory_cli.registry import register
from memfactory_cli.rewards.qa import extract_answer, normalize_answer


@register("reward", "format")
def format_reward(
    prompts, completions, memory_within_budget=None, context=None, grounded: bool = False, **kwargs
) -> list[float | None]:
    """1.0 for a well-formed trajectory, else 0.0.

    With ``grounded`` the boxed text must also occur in the document, so that the format point cannot be earned by
    copying the one-shot example's answer (seen with LoRA on the CPU demo).
    """
    out: list[float | None] = []
    for i, completion in enumerate(completions):
        answer = extract_answer(completion)
        ok = answer is not None and answer.strip() != ""
        if memory_within_budget is not None:
            ok = ok and bool(memory_within_budget[i])
        if ok and grounded:
            if context is None:
                out.append(None)
                continue
            ok = normalize_answer(answer) in normalize_answer(context[i])
        out.append(float(ok))
    return out
