"""The generation interface agents roll out through.

An agent hands over a batch of prompts (token ids) and a token budget and gets completions back, each cut after its
first EOS (kept, so a finished turn is distinguishable from a truncated one). Where the tokens come from (HF
``generate`` here, TRL's generation path inside the trainer) is the backend's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


class Generator(Protocol):
    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]: ...


def cut_after_eos(row: list[int], stop_ids: set[int]) -> list[int]:
    for i, tok in enumerate(row):
        if tok in stop_ids:
            return row[: i + 1]
    return row


class HFGenerator:
    """``model.generate`` on left-padded batches, longest prompts first, ``max_batch`` sequences at a time."""

    def __init__(self, model: Any, tokenizer: Any, sampling: SamplingParams, max_batch: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.max_batch = max_batch
        eos = model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = sorted({i for i in [*eos_ids, tokenizer.eos_token_id] if i is not None})
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        if not prompts:
            return []
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        size = self.max_batch or len(prompts)
        out: list[list[int]] = [[] for _ in prompts]
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            for i, completion in zip(batch, self._generate_batch([prompts[i] for i in batch], max_new_tokens)):
                out[i] = completion
        return out

    def _generate_batch(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        import torch

        width = max(len(p) for p in prompts)
        device = self.model.device
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        s = self.sampling
        sampling = dict(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k) if s.do_sample else dict(do_sample=False)
        with torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_ids,
                **sampling,
            )
        stop = set(self.eos_ids)
        return [cut_after_eos(row, stop) for row in output[:, width:].tolist()]
