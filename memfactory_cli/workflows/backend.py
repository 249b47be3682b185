"""Which engine generates the training rollouts: transformers ``generate`` (default) or TRL's vLLM integration.

``generation.backend: vllm`` maps onto ``GRPOConfig``'s own vLLM fields; TRL builds the engine (``colocate``: one
``vllm.LLM`` inside every training process; ``server``: a client of ``trl vllm-serve`` running on other GPUs) and
syncs the policy weights into it once per optimizer step. ``MemGRPOTrainer``'s generator calls TRL's
``_generate_single_turn``, so every turn of every agent (MemAgent's batched turn k, single-turn agents) goes through
that engine. GPU-only: this path cannot run in CI (no CUDA, no vllm); only the selection below is tested there.

TRL's vLLM importance-sampling correction is switched off, on purpose. vLLM's sampling log-probs differ slightly from
the training engine's, and TRL corrects for it with a truncated importance ratio over the rows *it* builds (the answer
turns). The memory-update rows are built by the agent loop through the ``Generator`` interface, which returns token
ids only, so they carry no sampling log-probs. Correcting the answer rows but not the memory rows would weight the two
kinds of rows of one loss differently. With the correction off every row is trained by the classic PPO/GRPO ratio
against old log-probs recomputed by the training engine, the same for all rows.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from memfactory_cli.config.schema import GenerationConfig
from memfactory_cli.errors import UserError

BACKENDS = ("hf", "vllm")
VLLM_MODES = ("colocate", "server")


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def generation_fields(gen: GenerationConfig, device: str) -> dict[str, Any]:
    """``GRPOConfig`` keyword arguments for ``gen``; every unusable setting is one clear error."""
    if gen.backend not in BACKENDS:
        raise UserError(f"generation.backend must be one of {', '.join(BACKENDS)}, not '{gen.backend}'")
    if gen.backend == "hf":
        return {"use_vllm": False}
    if gen.vllm_mode not in VLLM_MODES:
        raise UserError(f"generation.vllm_mode must be one of {', '.join(VLLM_MODES)}, not '{gen.vllm_mode}'")
    if device != "cuda":
        raise UserError(f"generation.backend=vllm needs a CUDA GPU (this run is on {device}); use generation.backend=hf")
    if not vllm_installed():
        raise UserError("generation.backend=vllm needs the vllm package: pip install 'memfactory[gpu]' (CUDA only)")
    if not 0.0 < gen.vllm_gpu_memory_utilization <= 1.0:
        raise UserError(f"generation.vllm_gpu_memory_utilization must be in (0, 1], got {gen.vllm_gpu_memory_utilization}")
    if gen.vllm_tensor_parallel_size < 1:
        raise UserError(f"generation.vllm_tensor_parallel_size must be >= 1, got {gen.vllm_tensor_parallel_size}")
    return {
        "use_vllm": True,
        "vllm_mode": gen.vllm_mode,
        "vllm_server_host": gen.vllm_server_host,
        "vllm_server_port": gen.vllm_server_port,
        "vllm_gpu_memory_utilization": gen.vllm_gpu_memory_utilization,
        "vllm_tensor_parallel_size": gen.vllm_tensor_parallel_size,
        "vllm_max_model_length": gen.vllm_max_model_length,
        "vllm_enable_sleep_mode": gen.vllm_enable_sleep_mode,
        "vllm_importance_sampling_correction": False,  # see the module docstring
    }
