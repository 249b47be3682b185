"""Attention kernel and inference dtype selection: FlashAttention-2 only where it imports and gets half precision."""

import sys

import pytest
import torch
import transformers.utils

from memfactory_cli.errors import UserError
from memfactory_cli.generation.base import HFGenerator, SamplingParams, compute_context
from memfactory_cli.models import loading
from memfactory_cli.models.loading import autocast_dtype, choose_attention, inference_dtype


@pytest.fixture()
def fake_cuda(monkeypatch):
    """A bf16-capable CUDA probe and an importable flash-attn, on this CPU machine."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)
    monkeypatch.setattr(loading, "flash_attn_usable", lambda: True)


@pytest.mark.parametrize(
    "requested,device,dtype,autocast,expected",
    [
        ("auto", "cuda", "bfloat16", False, "flash_attention_2"),
        ("auto", "cuda", "float32", True, "flash_attention_2"),  # training: every forward under bf16 autocast
        ("auto", "cuda", "float32", False, "sdpa"),  # fp32 forwards without autocast: FA2 would raise
        ("auto", "cpu", "bfloat16", False, "sdpa_additive"),
        ("sdpa_additive", "cuda", "float32", False, "sdpa_additive"),
        ("sdpa", "cpu", "float32", False, "sdpa"),
        ("eager", "cuda", "bfloat16", False, "eager"),
        ("sdpa", "cuda", "bfloat16", False, "sdpa"),
    ],
)
def test_choose_attention(requested, device, dtype, autocast, expected, fake_cuda):
    assert choose_attention(requested, device, dtype, autocast) == expected


def test_auto_attention_without_an_importable_flash_attn_is_sdpa(fake_cuda, monkeypatch):
    monkeypatch.setattr(loading, "flash_attn_usable", lambda: False)
    assert choose_attention("auto", "cuda", "bfloat16") == "sdpa"


def test_explicit_flash_attention_on_fp32_without_autocast_is_a_user_error(fake_cuda):
    with pytest.raises(UserError, match="needs half precision"):
        choose_attention("flash_attention_2", "cuda", "float32", autocast=False)


def test_flash_attn_usable_imports_the_cuda_extension(tmp_path, monkeypatch):
    """A flash_attn package whose compiled extension is missing (a broken build) is not usable."""
    (tmp_path / "flash_attn").mkdir()
    (tmp_path / "flash_attn" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not loading.flash_attn_usable()
    (tmp_path / "flash_attn_2_cuda.py").write_text("")
    sys.modules.pop("flash_attn_2_cuda", None)
    try:
        assert loading.flash_attn_usable()
    finally:
        sys.modules.pop("flash_attn_2_cuda", None)


def test_inference_on_cuda_computes_in_bf16(fake_cuda):
    """fp32 weights: a model loaded only for inference is bf16, and the trainer's fp32 model generates under bf16
    autocast (eval before/after training, LoRA generation), so FlashAttention-2 never gets fp32."""
    assert inference_dtype("float32", "cuda") == "bfloat16"
    assert autocast_dtype(torch.float32, "cuda") == torch.bfloat16
    assert inference_dtype("float32", "cpu") == "float32" and autocast_dtype(torch.float32, "cpu") is None
    assert autocast_dtype(torch.bfloat16, "cuda") is None  # already half


def test_generator_forwards_run_under_the_compute_autocast(model, tokenizer, monkeypatch):
    """HFGenerator's prefill and generate run inside compute_context: checked on CPU with the decision forced to bf16."""
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))
    HFGenerator(model, tokenizer, SamplingParams(do_sample=False), autocast=torch.bfloat16).generate([[5, 6, 7, 8]], 2)
    assert seen and all(on and dtype == torch.bfloat16 for on, dtype in seen)
    with compute_context(model):  # fp32 on CPU: no autocast
        assert not torch.is_autocast_enabled("cpu")
