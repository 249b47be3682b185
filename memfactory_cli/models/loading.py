"""Resolve ``model.name_or_path`` and load the model and tokenizer with the right device, dtype and attention."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from memfactory_cli.config.schema import ModelConfig
from memfactory_cli.errors import UserError
from memfactory_cli.registry import registry


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda when available, else cpu. A recipe that asks for cuda on a CPU machine fails here, first."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "this recipe needs a CUDA GPU (trainer.device=cuda) but none is visible; "
            "for a CPU run use recipes/memagent_tiny_cpu.yaml or override trainer.device=cpu"
        )
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def adapter_base(path: str) -> str | None:
    """The base model a LoRA folder (``adapter_config.json``, no ``config.json``) was trained on, else None."""
    folder = Path(path)
    if (folder / "config.json").exists() or not (folder / "adapter_config.json").exists():
        return None
    import json

    base = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise UserError(f"LoRA folder {folder} names no base model (adapter_config.json: base_model_name_or_path)")
    return base


def config_path(path: str) -> str:
    """Where the architecture's config.json is: the folder itself, or a LoRA folder's base model."""
    base = adapter_base(path)
    return resolve_model_path(base) if base is not None else path


def resolve_model_path(name_or_path: str) -> str:
    """An alias builds (once) and returns its folder; a local folder is used as is; a hub id must be reachable.

    A LoRA run's ``final/`` (adapter only) is a model folder too: its base must resolve (see :func:`load_model`).
    """
    if name_or_path in registry("model"):
        return str(registry("model").get(name_or_path)())
    if Path(name_or_path).expanduser().exists():
        path = Path(name_or_path).expanduser()
        if adapter_base(str(path)) is not None:
            config_path(str(path))  # the base must resolve too
            return str(path)
        if not (path / "config.json").exists():
            raise UserError(f"model folder {path} has no config.json")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise UserError(
            f"model '{name_or_path}' is neither a local folder, an alias ({', '.join(registry('model').names())}) "
            "nor a hub id 'org/name'"
        )
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        return name_or_path
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if offline or not _hub_reachable():
        raise UserError(
            f"model '{name_or_path}' is not in the local Hugging Face cache and the hub is unreachable"
            f"{' (HF_HUB_OFFLINE=1)' if offline else ''}; download it on a connected machine with "
            f"`hf download {name_or_path}` or set model.name_or_path to a local folder"
        )
    return name_or_path


HALF = ("bfloat16", "float16")


def flash_attn_usable() -> bool:
    """flash-attn's compiled CUDA extension imports, not just its package metadata.

    A flash-attn wheel built against another torch (or under pip's build isolation) installs fine and fails at
    import with undefined symbols; transformers' ``is_flash_attn_2_available`` only reads the metadata.
    """
    import importlib

    try:
        importlib.import_module("flash_attn_2_cuda")
    except Exception:  # ImportError, or an OSError for a missing CUDA library
        return False
    return True


def half_dtype() -> Any:
    """The half precision a CUDA forward computes in: bf16 where the GPU supports it, else fp16."""
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_dtype(weights: Any, device_type: str) -> Any:
    """The autocast dtype an inference forward of fp32 weights needs on this device, or None (run as loaded).

    Training computes under bf16 autocast over fp32 master weights (accelerate patches the prepared model's
    forward); every other forward (eval, infer, serve, a judge, a frozen role, LoRA generation, which bypasses the
    patched forward) must do the same, so it matches training and FlashAttention-2 never sees fp32. CPU runs as
    loaded: bf16 autocast there is slower than fp32 on most CPUs.
    """
    import torch

    if device_type != "cuda" or weights != torch.float32:
        return None
    return half_dtype()


def inference_dtype(name: str, device: str) -> str:
    """The dtype to load a model in that is never trained here: fp32 becomes the compute half dtype on CUDA.

    Half the memory of fp32 weights and exactly what training computes in, so eval numbers match training's.
    """
    if device != "cuda" or name != "float32":
        return name
    import torch

    return "bfloat16" if half_dtype() == torch.bfloat16 else "float16"


def choose_attention(requested: str, device: str, dtype: str = "float32", autocast: bool = False) -> str:
    """auto: FlashAttention-2 on CUDA when it imports and will get half precision (half weights, or fp32 weights
    whose every forward runs under autocast), else SDPA (on CPU with one shared additive mask per forward)."""
    from memfactory_cli.models import attention

    if requested == attention.NAME or (requested == "auto" and device == "cpu"):
        return attention.register()
    half = dtype in HALF or autocast
    if requested in ("flash_attention_2", "flash_attention_3") and not half:
        raise UserError(
            f"model.attn_implementation={requested} needs half precision: set model.dtype=bfloat16, or keep float32 "
            "weights with trainer.bf16=true (bf16 autocast); or use attn_implementation=auto"
        )
    if requested != "auto":
        return requested
    if device == "cuda" and half:
        from transformers.utils import is_flash_attn_2_available

        if is_flash_attn_2_available() and flash_attn_usable():
            return "flash_attention_2"
    return "sdpa"


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}[name]


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig, device: str = "cpu", path: str | None = None, *, inference: bool = False, autocast: bool = False):
    """Load the causal LM with the chosen attention kernel.

    Training loads ``cfg.dtype`` (fp32 master weights by default; ``autocast``: every forward runs under bf16
    autocast). A LoRA folder loads its base with the adapters merged. ``inference`` loads a model that is only generated with (eval, infer, serve, judges, frozen roles) in
    the compute dtype instead: see :func:`inference_dtype`.
    """
    from transformers import AutoModelForCausalLM

    path = path or resolve_model_path(cfg.name_or_path)
    dtype = inference_dtype(cfg.dtype, device) if inference else cfg.dtype
    attention = choose_attention(cfg.attn_implementation, device, dtype, autocast)
    model = AutoModelForCausalLM.from_pretrained(config_path(path), dtype=torch_dtype(dtype), attn_implementation=attention)
    if adapter_base(path) is not None:  # a LoRA run's final/: the base with the adapters merged in
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    return model.to(device)


def load_model_and_tokenizer(cfg: ModelConfig, device: str = "cpu", *, inference: bool = False):
    path = resolve_model_path(cfg.name_or_path)
    return load_model(cfg, device, path, inference=inference), load_tokenizer(path)
