"""Prompt templates, compiled once to token pieces so every turn's prompt is built by concatenating ids.

Building prompts from ids (not by re-tokenising text) is faster and guarantees that each training row is exactly
the context the turn was sampled with. A template is a chat (optionally with a one-shot example as earlier turns)
whose last user message holds ``{slot}`` placeholders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Short on purpose: every memory-update row carries this text twice (one-shot example and real turn), and on the CPU
# demo the update phase costs time per token.
UPDATE_INSTRUCTION = (
    "Read the next section of a document and update your memory: keep only what helps answer the question."
)
UPDATE_BODY = "\n\n<problem>\n{question}\n</problem>\n\n<memory>\n{memory}\n</memory>\n\n<section>\n{chunk}\n</section>\n\nUpdated memory:"
FINAL_INSTRUCTION = "Answer the question from your memory in one to three words, inside \\boxed{}."
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


def update_messages(one_shot: bool) -> list[dict[str, str]]:
    user = {"role": "user", "content": UPDATE_INSTRUCTION + UPDATE_BODY}
    if not one_shot:
        return [user]
    example = UPDATE_INSTRUCTION + fill(UPDATE_BODY, **EXAMPLE)
    return [{"role": "user", "content": example}, {"role": "assistant", "content": EXAMPLE["new_memory"]}, user]


def final_messages(one_shot: bool) -> list[dict[str, str]]:
    user = {"role": "user", "content": FINAL_INSTRUCTION + FINAL_BODY}
    if not one_shot:
        return [user]
    example = FINAL_INSTRUCTION + fill(FINAL_BODY, question=EXAMPLE["question"], memory=EXAMPLE["new_memory"])
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
