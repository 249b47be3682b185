"""Small text <-> ids jobs every agent and reward shares: the reply after thinking, a one-message chat, stop ids."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

THINK_CLOSE = "</think>"


def after_thinking(text: str) -> str:
    """The reply after the last ``</think>`` (all of it when there is none), stripped: what a thinking model
    answers. An unclosed ``<think>`` is left as it is: a turn cut inside its thinking has no answer to extract."""
    return text.rsplit(THINK_CLOSE, 1)[-1].strip()


def chat_ids(tokenizer: Any, user_text: str, enable_thinking: bool = False) -> list[int]:
    """Token ids of a one-message chat ready for the assistant's reply."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@functools.lru_cache(maxsize=16)
def _generation_eos(name_or_path: str) -> tuple[int, ...]:
    """The EOS list of the model's ``generation_config.json`` next to its tokenizer (none when there is no file)."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(name_or_path, local_files_only=True).eos_token_id
    except (OSError, ValueError):
        return ()
    return tuple(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def stop_ids(tokenizer: Any, extra: Iterable[int | None] = ()) -> set[int]:
    """Ids that end a turn: the tokenizer's EOS, the generation config's EOS list (Qwen3: ``<|im_end|>`` and
    ``<|endoftext|>``) and ``extra`` (e.g. the loaded model's ``generation_config.eos_token_id``); never the unk id."""
    found = [tokenizer.eos_token_id, *_generation_eos(str(tokenizer.name_or_path or "")), *extra]
    return {i for i in found if isinstance(i, int) and i != tokenizer.unk_token_id}
