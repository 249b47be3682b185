"""The generation interface agents roll out through.

An agent hands over a batch of prompts (token ids) and a token budget and gets completions back, each cut after its
first EOS (kept, so a finished turn is distinguishable from a truncated one). Where the tokens come from (HF
``generate`` here, TRL's generation path inside the trainer) is the backend's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from memfactory_cli.modules.text import stop_ids


def _cache_name() -> str:
    """The name of the KV cache in ``generate``'s keywords and in model outputs: transformers 5.24 renamed
    ``past_key_values`` to ``cache`` (the old name still works there but logs a deprecation warning); older
    releases only know the old name."""
    import transformers
    from packaging.version import Version

    return "cache" if Version(transformers.__version__).release >= (5, 24) else "past_key_values"


CACHE_KWARG = _cache_name()


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


def eos_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """The ids a completion stops at, for every backend: :func:`stop_ids` plus the model's generation config EOS."""
    eos = generation_config.eos_token_id
    return sorted(stop_ids(tokenizer, eos if isinstance(eos, list) else [eos]))


class HFGenerator:
    """``model.generate`` on left-padded batches, longest prompts first, ``max_batch`` sequences at a time.

    With ``shared_prefill`` (the default) every distinct prompt is prefilled once and without padding before
    ``generate`` decodes the whole batch: see :func:`prefill_cache`.
    """

    def __init__(
        self, model: Any, tokenizer: Any, sampling: SamplingParams, max_batch: int | None = None, shared_prefill: bool = True
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.max_batch = max_batch
        self.shared_prefill = shared_prefill
        self.eos_ids = eos_ids(model.generation_config, tokenizer)
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
            cache = prefill_cache(self.model, input_ids, attention_mask, self.pad_id) if self.shared_prefill else None
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                **{CACHE_KWARG: cache},
                max_new_tokens=max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_ids,
                **sampling,
            )
        stop = set(self.eos_ids)
        return [cut_after_eos(row, stop) for row in output[:, width:].tolist()]


def prefill_cache(model: Any, input_ids: Any, attention_mask: Any, pad_id: int) -> Any:
    """The KV cache of a left-padded batch's prompts but their last token, laid out as ``generate`` expects it.

    ``generate`` would prefill the padded batch itself, but a padded prefill needs an attention mask, which on CPU
    costs SDPA its causal fast path, and it computes a group's G identical prompts (every first MemAgent turn) G
    times. Here each distinct prompt runs once, right-padded, so causality alone hides the padding (no mask); each
    row's cache is then rolled right by its padding and copied to every row that shares the prompt. Positions
    match: a left-padded row's position ids start at 0 on its first real token. Returns None (``generate`` then
    prefills as usual) for a prompt shorter than 2 tokens or a cache other than plain dynamic layers.
    """
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    lengths = attention_mask.sum(dim=1).tolist()
    width = input_ids.size(1)
    if min(lengths) < 2 or any(attention_mask[i, width - n :].min() == 0 for i, n in enumerate(lengths)):
        return None
    rows = input_ids.tolist()
    distinct: dict[tuple[int, ...], int] = {}
    slot_rows = torch.tensor([distinct.setdefault(tuple(row[width - n :]), len(distinct)) for row, n in zip(rows, lengths)])
    span = width - 1
    ids = torch.full((len(distinct), span), pad_id, dtype=torch.long)
    for row, prompt in enumerate(distinct):
        ids[row, : len(prompt) - 1] = torch.tensor(prompt[:-1], dtype=torch.long)
    with torch.no_grad():
        cache = model(input_ids=ids.to(input_ids.device), use_cache=True, logits_to_keep=1)[CACHE_KWARG]
    if type(cache) is not DynamicCache or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    padding = torch.tensor([span - (len(p) - 1) for p in distinct])
    source = ((torch.arange(span)[None, :] - padding[:, None]) % span)[slot_rows]  # new position j <- old j - padding
    for layer in cache.layers:
        for name in ("keys", "values"):
            kv = getattr(layer, name)[slot_rows.to(layer.keys.device)]
            index = source.to(kv.device)[:, None, :, None].expand(-1, kv.size(1), -1, kv.size(3))
            setattr(layer, name, kv.gather(2, index))
    return cache
