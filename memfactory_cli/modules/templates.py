"""Prompt templates, compiled once to token pieces so every turn's prompt is built by concatenating ids.

Building prompts from ids (not by re-tokenising text) is faster and guarantees that each training row is exactly
the context the turn was sampled with. A template is a chat (optionally with a one-shot example as earlier turns)
whose last user message holds ``{slot}`` placeholders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Instruction texts by template name (``agent.modules.memory.template``). ``memagent`` is MemAgent's own wording,
# which MemFactory used as is (MemAgent's quickstart ``TEMPLATE`` / ``TEMPLATE_FINAL``): keep every relevant detail
# of the previous memory, and no length limit on the answer. ``compact`` is short on purpose for the CPU demo, where
# every memory-update row carries the instruction twice (one-shot example and real turn) and the update phase costs
# time per token; its "keep only" and "one to three words" fit the demo's one-relation questions, not HotpotQA.
INSTRUCTIONS = {
    "memagent": (
        "You are presented with a problem, a section of an article that may contain the answer to the problem, and a "
        "previous memory. Please read the provided section carefully and update the memory with the new information "
        "that helps to answer the problem. Be sure to retain all relevant details from the previous memory while "
        "adding any new, useful information.",
        "You are presented with a problem and a previous memory. Please answer the problem based on the previous "
        "memory and put the answer in \\boxed{}.",
    ),
    "compact": (
        "Read the next section of a document and update your memory: keep only what helps answer the question.",
        "Answer the question from your memory in one to three words, inside \\boxed{}.",
    ),
}
TEMPLATES = tuple(INSTRUCTIONS)
UPDATE_INSTRUCTION, FINAL_INSTRUCTION = INSTRUCTIONS["compact"]
UPDATE_BODY = "\n\n<problem>\n{question}\n</problem>\n\n<memory>\n{memory}\n</memory>\n\n<section>\n{chunk}\n</section>\n\nUpdated memory:"
FINAL_BODY = "\n\n<problem>\n{question}\n</problem>\n\n<memory>\n{memory}\n</memory>\n\nYour answer:"

# The one-shot example mirrors the task's form with an answer no real question can have, so copying it never
# earns a reward (a lesson from the CPU demo: an example answer that could be valid gets copied).
EXAMPLE = {
    "question": "Which city does Orion Vale live in?",
    "memory": "No previous memory",
    "chunk": "The lantern by the pier was repainted on Friday. Lyra Stone lives in Quillby. "
    "Orion Vale lives in Zephyrton. Lyra Stone keeps a kettle on her desk.",
    "new_memory": "Orion Vale lives in Zephyrton.",
    "answer": "\\boxed{Zephyrton}",
}

def fill(text: str, **slots: str) -> str:
    """Replace ``{slot}`` placeholders; unlike ``str.format`` it leaves other braces (``\\boxed{}``) alone."""
    for name, value in slots.items():
        text = text.replace("{" + name + "}", value)
    return text


def update_messages(one_shot: bool, template: str) -> list[dict[str, str]]:
    instruction = INSTRUCTIONS[template][0]
    user = {"role": "user", "content": instruction + UPDATE_BODY}
    if not one_shot:
        return [user]
    example = instruction + fill(UPDATE_BODY, **EXAMPLE)
    return [{"role": "user", "content": example}, {"role": "assistant", "content": EXAMPLE["new_memory"]}, user]


def final_messages(one_shot: bool, template: str) -> list[dict[str, str]]:
    instruction = INSTRUCTIONS[template][1]
    user = {"role": "user", "content": instruction + FINAL_BODY}
    if not one_shot:
        return [user]
    example = instruction + fill(FINAL_BODY, question=EXAMPLE["question"], memory=EXAMPLE["new_memory"])
    return [{"role": "user", "content": example}, {"role": "assistant", "content": EXAMPLE["answer"]}, user]


_SENTINEL = "\ue000{}\ue001"


@dataclass
class TokenTemplate:
    """A chat template split into literal token pieces and named slots."""

    pieces: list[list[int] | str]  # token ids of literal text, or a slot name

    @classmethod
    def compile(cls, tokenizer: Any, messages: list[dict[str, str]], chat_kwargs: dict[str, Any]) -> TokenTemplate:
        slots = ("question", "memory", "chunk")
        marked = [dict(m) for m in messages]
        marked[-1]["content"] = fill(marked[-1]["content"], **{s: _SENTINEL.format(s) for s in slots})
        text = tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=True, **chat_kwargs)
        pieces: list[list[int] | str] = []
        rest = text
        while "\ue000" in rest:
            head, _, tail = rest.partition("\ue000")
            name, _, rest = tail.partition("\ue001")
            if head:
                pieces.append(tokenizer(head, add_special_tokens=False)["input_ids"])
            pieces.append(name)
        if rest:
            pieces.append(tokenizer(rest, add_special_tokens=False)["input_ids"])
        return cls(pieces)

    @property
    def literal_tokens(self) -> int:
        """Tokens the template adds around its slots (chat markup and instructions)."""
        return sum(len(piece) for piece in self.pieces if not isinstance(piece, str))

    def build(self, **slots: list[int]) -> list[int]:
        out: list[int] = []
        for piece in self.pieces:
            out += slots[piece] if isinstance(piece, str) else piece
        return out
