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


def resolve_model_path(name_or_path: str) -> str:
    """An alias builds (once) and returns its folder; a local folder is used as is; a hub id must be reachable."""
    if name_or_path in registry("model"):
        return str(registry("model").get(name_or_path)())
    if Path(name_or_path).expanduser().exists():
        path = Path(name_or_path).expanduser()
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


def choose_attention(requested: str, device: str) -> str:
    """auto: FlashAttention-2 on CUDA when installed, else SDPA (on CPU with one shared additive mask per forward)."""
    from memfactory_cli.models import attention

    if requested == attention.NAME or (requested == "auto" and device == "cpu"):
        return attention.register()
    if requested != "auto":
        return requested
    if device == "cuda":
        from transformers.utils import is_flash_attn_2_available

        if is_flash_attn_2_available():
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


def load_model(cfg: ModelConfig, device: str = "cpu", path: str | None = None):
    """Load the causal LM in ``cfg.dtype`` (fp32 master weights by default) with the chosen attention kernel."""
    from transformers import AutoModelForCausalLM

    path = path or resolve_model_path(cfg.name_or_path)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype(cfg.dtype), attn_implementation=choose_attention(cfg.attn_implementation, device)
    )
    return model.to(device)


def load_model_and_tokenizer(cfg: ModelConfig, device: str = "cpu"):
    path = resolve_model_path(cfg.name_or_path)
    return load_model(cfg, device, path), load_tokenizer(path)
