"""HFGenerator's shared prefill and the CPU attention kernel are speed-ups only: they must not change the numbers."""

from __future__ import annotations

import random

import torch

from memfactory_cli.generation.base import HFGenerator, SamplingParams, prefill_cache
from memfactory_cli.models import attention


def _prompts(vocab: int) -> list[list[int]]:
    rng = random.Random(0)
    base = [[rng.randrange(10, vocab) for _ in range(rng.randint(3, 40))] for _ in range(5)]
    return base + base[:2] + [base[3]]  # duplicates, like a group's G identical first-turn prompts


def test_shared_prefill_cache_equals_left_padded_prefill(model, tokenizer):
    prompts = _prompts(len(tokenizer))
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    full_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    full_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        shared = prefill_cache(model, full_ids, full_mask, pad)
        ids, mask = full_ids[:, :-1], full_mask[:, :-1]
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        padded = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True).past_key_values
    assert shared is not None
    real = mask.bool()[:, None, :, None]
    for ours, reference in zip(shared.layers, padded.layers):
        assert ours.keys.shape == reference.keys.shape
        assert torch.allclose(ours.keys * real, reference.keys * real, atol=1e-5)
        assert torch.allclose(ours.values * real, reference.values * real, atol=1e-5)


def test_shared_prefill_generates_the_same_tokens(model, tokenizer):
    prompts = _prompts(len(tokenizer))
    plain = HFGenerator(model, tokenizer, SamplingParams(do_sample=False), shared_prefill=False).generate(prompts, 10)
    shared = HFGenerator(model, tokenizer, SamplingParams(do_sample=False)).generate(prompts, 10)
    assert shared == plain
    assert all(len(c) > 0 for c in shared)


def test_additive_mask_attention_equals_sdpa(model, tokenizer):
    assert model.config._attn_implementation == attention.NAME  # what `auto` picks on CPU
    ids = torch.randint(10, len(tokenizer), (3, 12))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    mask[2, :2] = 0
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).logits
        model.set_attn_implementation("sdpa")
        try:
            reference = model(input_ids=ids, attention_mask=mask).logits
        finally:
            model.set_attn_implementation(attention.NAME)
    real = mask.bool()
    assert torch.allclose(ours[real], reference[real], atol=1e-5)


def _meta_model(bpe_model_dir, seen):
    """A model on another device than its callers' (meta: shapes only) that rejects inputs from anywhere else.

    ``generate`` is a stub (a meta model has no values to decode): it checks its inputs and returns pad tokens.
    """
    from memfactory_cli.config.schema import ModelConfig
    from memfactory_cli.models.loading import load_model

    model = load_model(ModelConfig(name_or_path=str(bpe_model_dir), attn_implementation="sdpa"), "cpu").eval().to("meta")

    def reject_foreign(module, args, kwargs):
        for value in [*args, *kwargs.values()]:
            if isinstance(value, torch.Tensor):
                seen.append(value.device.type)
                if value.device != model.device:
                    raise RuntimeError(f"Expected all tensors to be on the same device, got {value.device} and {model.device}")

    model.register_forward_pre_hook(reject_foreign, with_kwargs=True)

    def generate(input_ids, attention_mask, max_new_tokens, **kwargs):
        reject_foreign(model, (input_ids, attention_mask), {})
        return torch.zeros((input_ids.size(0), input_ids.size(1) + max_new_tokens), dtype=torch.long)

    model.generate = generate
    return model


def test_every_tensor_handed_to_the_model_is_on_its_device(bpe_model_dir, tokenizer):
    """Old code built the shared prefill's ids on the CPU and fed them to the (CUDA) model: a device mismatch."""
    seen: list[str] = []
    model = _meta_model(bpe_model_dir, seen)
    assert model.device.type == "meta"
    out = HFGenerator(model, tokenizer, SamplingParams(do_sample=False)).generate(_prompts(len(tokenizer)), 3)
    assert len(out) == 8
    assert seen and set(seen) == {"meta"}  # the prefill forward and generate both got meta tensors only


def _respects(batches, lengths, new_tokens, per_token, budget):
    for batch in batches:
        width = max(lengths[i] for i in batch) + new_tokens
        assert len(batch) == 1 or len(batch) * width * per_token <= budget


def test_bounded_batches_respect_the_budget_and_cover_every_prompt():
    from memfactory_cli.generation.base import bounded_batches

    lengths = [30, 5, 17, 40, 2, 40, 9]
    batches = bounded_batches(lengths, 10, 100, budget=100 * 50 * 3, max_batch=None)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    _respects(batches, lengths, 10, 100, 100 * 50 * 3)
    assert [len(b) for b in batches] == [3, 4]  # 3 rows of width 50, then the shorter rest together
    assert bounded_batches(lengths, 10, 100, budget=1) == [[3], [5], [0], [2], [6], [1], [4]]  # one at a time
    assert [len(b) for b in bounded_batches(lengths, 10, 100, None, max_batch=2)] == [2, 2, 2, 1]


def test_kv_bounded_generation_equals_unbounded(model, tokenizer):
    """Greedy, token for token: the budget changes how many prompts share a generate call, never the tokens."""
    prompts = _prompts(len(tokenizer))
    unbounded = HFGenerator(model, tokenizer, SamplingParams(do_sample=False), kv_budget=None)
    plain = unbounded.generate(prompts, 10)
    assert unbounded.batch_sizes == [len(prompts)]
    per_token = unbounded.bytes_per_token()
    budget = per_token * (40 + 10) * 3
    bounded = HFGenerator(model, tokenizer, SamplingParams(do_sample=False), kv_budget=budget)
    assert bounded.generate(prompts, 10) == plain
    assert len(bounded.batch_sizes) > 1 and sum(bounded.batch_sizes) == len(prompts)
    longest = max(len(p) for p in prompts)
    assert bounded.batch_sizes[0] == budget // ((longest + 10) * per_token)  # the widest batch fills the budget


def test_kv_bytes_per_token_counts_the_cache_generate_holds(model, tokenizer):
    """The helper's bytes per token times the cached positions equals the bytes of the cache's tensors."""
    from memfactory_cli.generation.base import model_kv_bytes_per_token
    from memfactory_cli.models.footprint import kv_bytes_per_token

    ids = torch.randint(10, len(tokenizer), (3, 17))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == 3 * 17 * model_kv_bytes_per_token(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 weights under bf16 autocast
        cache = model(input_ids=ids, use_cache=True).past_key_values
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    from memfactory_cli.models.footprint import cache_values_follow_keys

    values = torch.float32 if cache_values_follow_keys() else torch.bfloat16  # transformers 5.17 promotes them
    assert cache.layers[0].keys.dtype == torch.float32 and cache.layers[0].values.dtype == values  # Qwen3
    assert held == 3 * 17 * kv_bytes_per_token(model.config, torch.float32, torch.bfloat16)
