"""Attention kernel selection: flash_attention_2 only on CUDA with the package present; sdpa_additive on CPU."""

import pytest
import transformers.utils

from memfactory_cli.models.loading import choose_attention


@pytest.mark.parametrize(
    "requested,device,fa2,expected",
    [
        ("auto", "cuda", True, "flash_attention_2"),
        ("auto", "cuda", False, "sdpa"),
        ("auto", "cpu", True, "sdpa_additive"),
        ("sdpa_additive", "cuda", False, "sdpa_additive"),
        ("sdpa", "cpu", False, "sdpa"),
        ("eager", "cuda", True, "eager"),
        ("sdpa", "cuda", True, "sdpa"),
    ],
)
def test_choose_attention(requested, device, fa2, expected, monkeypatch):
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: fa2)
    assert choose_attention(requested, device) == expected
