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
