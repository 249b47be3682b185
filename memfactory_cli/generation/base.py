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


AUTO_KV_SHARE = 0.6  # of the GPU memory free when a generate call starts; the rest covers prefill activations


def kv_budget_bytes(setting: int | str | None, device: Any) -> int | None:
    """A generate batch's KV-cache budget in bytes, or None (unbounded).

    ``auto``: a share of the memory free on the model's GPU when the call starts, counting the blocks PyTorch's
    allocator holds unused (so the budget follows whatever training holds at that moment); unbounded on CPU. A size (``24GiB``) is used as given; ``none`` is unbounded.
    """
    from memfactory_cli.models.footprint import parse_bytes

    if setting is None or setting == "none":
        return None
    if setting != "auto":
        return parse_bytes(setting, "generation.kv_cache_budget")
    if getattr(device, "type", device) != "cuda":
        return None
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # the allocator's reusable blocks
    return int((free + cached) * AUTO_KV_SHARE)


def bounded_batches(
    lengths: list[int], max_new_tokens: int, bytes_per_token: int, budget: int | None, max_batch: int | None = None
) -> list[list[int]]:
    """Prompt indices, longest first, cut into consecutive batches whose KV cache fits ``budget`` bytes.

    A left-padded batch caches every row at the width of its longest prompt plus the new tokens, and its longest
    prompt is its first (the order is longest first), so a batch starting at prompt i holds at most
    ``budget // ((len_i + max_new_tokens) * bytes_per_token)`` rows (at least one: a single sequence always runs).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        size = len(order) - start
        if budget is not None:
            size = min(size, max(1, budget // max(1, (lengths[order[start]] + max_new_tokens) * bytes_per_token)))
        if max_batch:
            size = min(size, max_batch)
        batches.append(order[start : start + size])
        start += size
    return batches


def model_device(model: Any) -> Any:
    """The device a model's inputs must be on (its first parameter's; wrappers may not define ``.device``)."""
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


def compute_context(model: Any, dtype: Any = "auto") -> Any:
    """The autocast an inference forward of ``model`` runs under (``dtype``: auto -> models.loading.autocast_dtype)."""
    import contextlib

    import torch

    from memfactory_cli.models.loading import autocast_dtype

    device_type = model_device(model).type
    if dtype == "auto":
        dtype = autocast_dtype(model.dtype, device_type)
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def model_kv_bytes_per_token(model: Any, compute: Any = None) -> int:
    """:func:`models.footprint.kv_bytes_per_token` for a loaded model computing in ``compute`` (None: its dtype)."""
    from memfactory_cli.models.footprint import kv_bytes_per_token

    return kv_bytes_per_token(model.config, model.dtype, compute or model.dtype)


class HFGenerator:
    """``model.generate`` on left-padded batches, longest prompts first, each batch's KV cache within a budget.

    Batches hold at most ``max_batch`` sequences and at most ``kv_budget`` bytes of KV cache (``auto``: see
    :func:`kv_budget_bytes`; the cut depends only on prompt lengths, never on content). Every tensor is built on
    the model's device, and fp32 weights on CUDA run under half autocast (``autocast``: auto, a dtype or None), as
    in training. With ``shared_prefill`` (the default) every distinct prompt is prefilled once and without padding
    before ``generate`` decodes the batch: see :func:`prefill_cache`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        sampling: SamplingParams,
        max_batch: int | None = None,
        shared_prefill: bool = True,
        kv_budget: int | str | None = "auto",
        autocast: Any = "auto",
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.max_batch = max_batch
        self.shared_prefill = shared_prefill
        self.kv_budget = kv_budget
        self.autocast = autocast
        self.batch_sizes: list[int] = []  # of the last generate call, for tests and the smoke script
        self.eos_ids = eos_ids(model.generation_config, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    def bytes_per_token(self) -> int:
        import torch

        from memfactory_cli.models.loading import autocast_dtype

        compute = autocast_dtype(self.model.dtype, model_device(self.model).type) if self.autocast == "auto" else self.autocast
        return model_kv_bytes_per_token(self.model, compute if isinstance(compute, torch.dtype) else None)

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        if not prompts:
            return []
        budget = kv_budget_bytes(self.kv_budget, model_device(self.model))
        batches = bounded_batches([len(p) for p in prompts], max_new_tokens, self.bytes_per_token(), budget, self.max_batch)
        self.batch_sizes = [len(b) for b in batches]
        out: list[list[int]] = [[] for _ in prompts]
        for batch in batches:
            for i, completion in zip(batch, self._generate_batch([prompts[i] for i in batch], max_new_tokens)):
                out[i] = completion
        return out

    def _generate_batch(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        import torch

        width = max(len(p) for p in prompts)
        device = model_device(self.model)
        ids = [[self.pad_id] * (width - len(p)) + list(p) for p in prompts]
        input_ids = torch.tensor(ids, dtype=torch.long, device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long, device=device)
        s = self.sampling
        sampling = dict(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k) if s.do_sample else dict(do_sample=False)
        with torch.no_grad(), compute_context(self.model, self.autocast):
            cache = shared_prefix_cache(self.model, [list(p) for p in prompts], width, self.pad_id) if self.shared_prefill else None
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
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
    mask_rows = attention_mask.tolist()
    lengths = [sum(row) for row in mask_rows]
    width = input_ids.size(1)
    if any(min(row[width - n :], default=0) == 0 for row, n in zip(mask_rows, lengths)):
        return None  # not a left-padded batch
    prompts = [row[width - n :] for row, n in zip(input_ids.tolist(), lengths)]
    return shared_prefix_cache(model, prompts, width, pad_id)


def shared_prefix_cache(model: Any, prompts: list[list[int]], width: int, pad_id: int) -> Any:
    """:func:`prefill_cache` for a batch given as host-side prompt ids, left-padded to ``width`` by the caller.

    Only the prefill ids go to the model, built on its device; the layout is computed on the host.
    """
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if min(len(p) for p in prompts) < 2:
        return None
    distinct: dict[tuple[int, ...], int] = {}
    slot_rows = torch.tensor([distinct.setdefault(tuple(p), len(distinct)) for p in prompts])
    span = width - 1
    ids = torch.full((len(distinct), span), pad_id, dtype=torch.long)
    for row, prompt in enumerate(distinct):
        ids[row, : len(prompt) - 1] = torch.tensor(prompt[:-1], dtype=torch.long)
    with torch.no_grad():
        cache = model(input_ids=ids.to(model_device(model)), use_cache=True, logits_to_keep=1)[CACHE_KWARG]
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
