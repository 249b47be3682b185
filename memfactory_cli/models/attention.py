"""``sdpa_additive``: PyTorch SDPA fed one additive float mask per forward instead of a boolean mask per layer.

For a padded batch, transformers builds a boolean 4D mask once and every layer's ``scaled_dot_product_attention``
converts it to an additive float mask again; on CPU that conversion plus the boolean-mask kernel made a left-padded
prefill ~1.5x slower than the float-mask kernel (``bench/rollout.py``: batched rollouts are padded, a question's G
samples mostly are not). Here the mask is converted once, shared by all layers, and an unpadded batch still takes
SDPA's ``is_causal`` fast path (the mask is skipped entirely). Numerically it is the same attention as ``sdpa``.
"""

from __future__ import annotations

from typing import Any

NAME = "sdpa_additive"


def additive_mask(*args: Any, dtype: Any = None, **kwargs: Any) -> Any:
    import torch
    from transformers.masking_utils import sdpa_mask

    mask = sdpa_mask(*args, **kwargs)
    if mask is None or mask.dtype != torch.bool:
        return mask
    dtype = dtype or torch.float32
    return torch.where(mask, torch.zeros((), dtype=dtype, device=mask.device), torch.finfo(dtype).min)


def register() -> str:
    """Register the implementation with transformers (idempotent) and return its name."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(NAME, sdpa_attention_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, additive_mask)
    return NAME
