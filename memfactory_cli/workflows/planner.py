"""The memory planner: the estimated peak GPU memory of each phase of a training run, before anything loads.

``memfactory check --gpu-memory 80GiB`` prints it; ``train`` on CUDA runs it against the detected GPU and refuses a
plan that cannot fit, naming what to change. Everything comes from the resolved recipe and the model's config (no
weights): parameter counts from a meta-device instance, the KV cache per token from ``models/footprint.py`` (the
helper bounded generation uses), and the bytes autograd saves per token of a decoder layer, counted tensor by
tensor for a Qwen3/Llama-style layer. ``bench/planner.py`` checks the KV and activation terms against the bytes
actually held on CPU (``ratio=``). One GPU, one process: the plan is per process and does not model ZeRO/FSDP
sharding.

Phases (each a sum of parts that are alive together at that phase's peak):

- **rollout**: weights, optimizer states, the reference model, a colocated vLLM's share, and one HF generate batch's
  KV cache (``generation.kv_cache_budget``) plus its prefill's working set. Gradients are freed between steps.
- **update**: weights, gradients, optimizer states, the reference model, vLLM's share (none with sleep mode), and
  one micro-batch's activations: with gradient checkpointing one residual per layer plus one recomputed layer,
  without it every layer's saved tensors; plus autocast's half copies of the weights, the LM head's log-prob tiles
  and the attention mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from memfactory_cli.config.schema import RecipeConfig
from memfactory_cli.models.footprint import dtype_bytes, format_bytes, head_dim, kv_bytes_per_token, text_config
from memfactory_cli.trainer.config import reference_dtype

CUDA_CONTEXT = 1 << 30  # CUDA context, cuBLAS workspaces and allocator slack, per process
ASSUMED_PROMPT_TOKENS = 4096  # an agent that declares no row shapes (``BaseAgent.row_shapes`` returns None)
LOGPROB_TILE = (4096, 32768)  # TRL's chunked log-prob head: tokens x vocabulary per tile (trl.kernels.chunked_logprob)
OPTIMIZER_STATE_BYTES = {"adamw_torch": None, "adamw_torch_fused": None, "adamw_8bit": 2, "paged_adamw_8bit": 2}


@dataclass
class Phase:
    name: str
    parts: dict[str, float]
    advice: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.parts.values())


@dataclass
class MemoryPlan:
    gpu_bytes: int
    phases: list[Phase]
    notes: list[str] = field(default_factory=list)

    def failing(self) -> list[Phase]:
        return [p for p in self.phases if p.total > self.gpu_bytes]

    @property
    def fits(self) -> bool:
        return not self.failing()

    def render(self) -> str:
        lines = [f"memory plan (one process, estimates) against {format_bytes(self.gpu_bytes)}:"]
        for phase in self.phases:
            verdict = "fits" if phase.total <= self.gpu_bytes else "DOES NOT FIT"
            lines.append(f"  {phase.name}: {format_bytes(phase.total)}  {verdict}")
            lines += [f"    {label}: {format_bytes(n)}" for label, n in phase.parts.items() if n]
            if phase.total > self.gpu_bytes:
                lines += [f"    -> {a}" for a in phase.advice]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def problem(self) -> str | None:
        """One line naming each phase that does not fit and what to change, or None."""
        bad = self.failing()
        if not bad:
            return None
        parts = [
            f"the {p.name} phase needs about {format_bytes(p.total)} of {format_bytes(self.gpu_bytes)} ({'; '.join(p.advice) or 'no fix known'})"
            for p in bad
        ]
        return "memory plan: " + "; ".join(parts) + " (memfactory check --gpu-memory SIZE shows the whole plan)"


# -- model arithmetic --------------------------------------------------------------------------------------------
@dataclass
class ModelShape:
    config: Any
    parameters: int  # all parameters (tied embeddings counted once)
    linear_in_layers: int  # weights of the decoder layers' Linear modules (what autocast casts per forward)
    trainable: int  # parameters the optimizer updates (all, or the LoRA adapters)
    head_trainable: bool


def model_shape(config: Any, lora: Any = None) -> ModelShape:
    """Exact parameter counts from a meta-device instance of the architecture (no memory, no weights)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # from_config leaves tied embeddings untied under init_empty_weights
    total = sum(p.numel() for p in model.parameters())
    linear = sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in f".{n}")
    if lora is not None and lora.enabled:
        targets = set(lora.target_modules)
        trainable = sum(
            lora.r * (m.in_features + m.out_features)
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets
        )
        return ModelShape(config, total, linear, trainable, head_trainable=False)
    return ModelShape(config, total, linear, total, head_trainable=True)


def layer_activation_bytes(config: Any, compute: int, residual: int, attention: str = "sdpa") -> int:
    """Bytes autograd saves per token in one decoder layer (Qwen3/Llama layout), tensor by tensor.

    ``compute``: the bytes of the dtype matmuls run in (2 under half autocast); ``residual``: of the residual stream
    and the norms (4 with fp32 weights: autocast leaves elementwise ops in fp32). Qwen3's q/k norms add one set each.
    ``sdpa`` saves query, repeated keys and values, the output and the log-sum-exp; FlashAttention-2 keeps keys and
    values unrepeated.
    """
    c = text_config(config)
    hidden, inter, d = c.hidden_size, c.intermediate_size, head_dim(c)
    q_heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or q_heads
    norms = 2 * (2 * residual * hidden + 4)  # input and post-attention RMSNorm: input, rstd, normalised
    casts = 5 * compute * hidden  # autocast's half copies of the normed inputs of q, k, v, gate and up projections
    qk_norm = 0
    if getattr(c, "model_type", "") in ("qwen3", "qwen3_moe"):
        qk_norm = (q_heads + kv_heads) * (d * (4 + compute) + 4)  # fp32 input and rstd, half projection output
    kv_saved = q_heads if attention != "flash_attention_2" else kv_heads
    attn = (2 * q_heads + 2 * kv_saved) * d * compute + 4 * q_heads  # q, k, v, output, log-sum-exp
    mlp = 4 * compute * inter  # gate output, its activation, up output, the product fed to down_proj
    return norms + casts + qk_norm + attn + mlp


def update_activation_bytes(
    shape: ModelShape, tokens: int, rows: int, width: int, completion_tokens: int, compute: int, residual: int, attention: str, checkpointing: bool
) -> dict[str, float]:
    """The activation-side parts of one micro-batch's forward and backward."""
    c = text_config(shape.config)
    per_layer = layer_activation_bytes(c, compute, residual, attention) * tokens
    parts: dict[str, float] = {}
    layers_saved = 1 if checkpointing else c.num_hidden_layers
    if checkpointing:
        parts["activations (checkpointed: one residual per layer + one recomputed layer)"] = (
            c.num_hidden_layers * residual * c.hidden_size * tokens + per_layer
        )
    else:
        parts["activations (every layer's saved tensors)"] = c.num_hidden_layers * per_layer
    if attention != "flash_attention_2":
        # SDPA with padding saves a rows x width x width mask per layer in the compute dtype (measured on CPU);
        # FlashAttention-2 runs unpadded (varlen) and keeps none
        parts["attention masks (sdpa)"] = layers_saved * rows * width * width * compute
    parts["backward working set (one layer)"] = tokens * 2 * (residual * c.hidden_size + compute * c.intermediate_size)
    if compute < residual:
        parts["autocast's half copies of the weights"] = shape.linear_in_layers * compute
    vocab = c.vocab_size
    head = min(LOGPROB_TILE[0], max(completion_tokens, 1)) * min(LOGPROB_TILE[1], vocab) * 4 * 3
    head += completion_tokens * c.hidden_size * 8 + (vocab * c.hidden_size * 4 if shape.head_trainable else 0)
    parts["log-prob head (tiles, fp32 head gradient)"] = head
    return parts


# -- the plan ----------------------------------------------------------------------------------------------------
@dataclass
class RunShape:
    """What the plan needs from the recipe and the agent, per process."""

    slots: int  # trajectories per step on this process
    micro_batches: int  # S
    rows_per_trajectory: float
    prompt_tokens: int  # the widest training row: prompt ...
    completion_tokens: int  # ... and completion
    generate_prompt_tokens: int  # the widest generate call's prompts
    generate_new_tokens: int
    generate_rows: int  # prompts in one turn's generate call (before the KV budget cuts it)
    frozen_models: list[Any] = field(default_factory=list)  # configs of models loaded beside the policy, never trained


def run_shape(cfg: RecipeConfig, agent: Any, rows_per_trajectory: float, question_tokens: int, world_size: int = 1) -> RunShape:
    t = cfg.trainer
    slots = t.questions_per_step * t.num_generations // world_size
    shapes = agent.row_shapes(question_tokens) or {"a turn": (ASSUMED_PROMPT_TOKENS, agent.max_completion_tokens)}
    prompt, completion = max(shapes.values(), key=lambda pc: pc[0] + pc[1])
    return RunShape(
        slots=slots,
        micro_batches=steps_per_generation(cfg),
        rows_per_trajectory=agent.max_rows_per_trajectory or rows_per_trajectory,
        prompt_tokens=prompt,
        completion_tokens=completion,
        generate_prompt_tokens=prompt,
        generate_new_tokens=completion,
        generate_rows=slots * generation_multiple(cfg),
        frozen_models=[_frozen_config(name) for name in agent.frozen_models()],
    )


def _frozen_config(name: str) -> Any:
    from transformers import AutoConfig

    from memfactory_cli.models.loading import config_path, resolve_model_path

    return AutoConfig.from_pretrained(config_path(resolve_model_path(name)))


def steps_per_generation(cfg: RecipeConfig) -> int:
    return cfg.trainer.steps_per_generation or cfg.trainer.gradient_accumulation_steps


def generation_multiple(cfg: RecipeConfig) -> int:
    """Optimizer steps one generation serves (steps_per_generation / gradient_accumulation_steps)."""
    return max(1, steps_per_generation(cfg) // cfg.trainer.gradient_accumulation_steps)


def _dtype_name(cfg: RecipeConfig, config: Any) -> str:
    name = cfg.model.dtype
    if name == "auto":
        found = getattr(text_config(config), "dtype", None) or getattr(config, "torch_dtype", None)
        name = str(found).replace("torch.", "") if found is not None else "float32"
    return name


def plan(
    cfg: RecipeConfig,
    config: Any,
    gpu_bytes: int,
    run: RunShape,
    bf16: bool,
    trains_llm: bool = True,
    attention: str = "auto",
    assume_flash: bool = True,
) -> MemoryPlan:
    """The plan for one process of ``cfg`` on a GPU of ``gpu_bytes``; ``trains_llm`` False: inference only.

    ``attention`` auto is FlashAttention-2 with half precision when ``assume_flash`` (flash-attn imports, or the
    plan is for a GPU elsewhere, where the docs install it), else SDPA, whose padding masks the plan then counts.
    """
    import torch

    t, g = cfg.trainer, cfg.generation
    shape = model_shape(config, cfg.model.lora)
    weights_name = _dtype_name(cfg, config)
    weight_bytes = dtype_bytes(weights_name)
    half = bf16 or weights_name in ("bfloat16", "float16")
    compute = 2 if half else weight_bytes
    residual = weight_bytes if bf16 else compute
    if attention == "auto":
        attention = "flash_attention_2" if half and assume_flash else "sdpa"
    weights_dtype = getattr(torch, weights_name)
    compute_dtype = torch.bfloat16 if bf16 else weights_dtype
    notes: list[str] = [f"attention: {attention}" + (" (flash-attn assumed installed on the GPU host)" if attention == "flash_attention_2" and cfg.model.attn_implementation == "auto" else "")]

    resident: dict[str, float] = {"CUDA context and allocator slack": CUDA_CONTEXT}
    if trains_llm:
        resident[f"weights ({shape.parameters / 1e9:.2f}B x {weight_bytes} B, {weights_name})"] = shape.parameters * weight_bytes
    else:
        inference = 2 if weights_name == "float32" else weight_bytes  # models.loading.inference_dtype
        resident[f"weights ({shape.parameters / 1e9:.2f}B x {inference} B, inference)"] = shape.parameters * inference
    grads: dict[str, float] = {}
    if trains_llm:
        state = OPTIMIZER_STATE_BYTES.get(t.optim) or 2 * weight_bytes
        grads[f"gradients ({shape.trainable / 1e9:.3f}B trainable)"] = shape.trainable * weight_bytes
        resident[f"optimizer states ({t.optim}, {state} B/param)"] = shape.trainable * state
        if t.beta != 0 and not cfg.model.lora.enabled:
            ref = dtype_bytes(reference_dtype(cfg, bf16))
            resident[f"reference model ({ref} B/param)"] = shape.parameters * ref
    for frozen in run.frozen_models:
        resident["frozen model beside the policy (bf16)"] = resident.get("frozen model beside the policy (bf16)", 0) + model_shape(frozen).parameters * 2
    if g.backend == "vllm" and g.vllm_mode == "colocate":
        resident[f"vLLM colocate ({g.vllm_gpu_memory_utilization:.2f} of the GPU)"] = g.vllm_gpu_memory_utilization * gpu_bytes
    phases: list[Phase] = []

    # rollout: one HF generate batch within the KV budget
    rollout = dict(resident)
    if g.backend != "vllm":
        per_token = kv_bytes_per_token(config, weights_dtype if trains_llm else compute_dtype, compute_dtype)
        width = run.generate_prompt_tokens + run.generate_new_tokens
        free = gpu_bytes - sum(resident.values())
        budget = _budget(g.kv_cache_budget, free)
        rows = run.generate_rows if budget is None else max(1, min(run.generate_rows, int(budget // (width * per_token))))
        if g.max_batch:
            rows = min(rows, g.max_batch)
        calls = math.ceil(run.generate_rows / rows)
        c = text_config(config)
        rollout[f"KV cache: {rows} of {run.generate_rows} sequences x {width} tokens x {per_token / 1024:.0f} KiB ({calls} generate calls a turn)"] = (
            rows * width * per_token
        )
        prefill = rows * run.generate_prompt_tokens * (2 * residual * c.hidden_size + 3 * compute * c.intermediate_size)
        rollout["prefill working set (one layer of the batch's prompts)"] = prefill
        notes.append(
            f"generation.kv_cache_budget={g.kv_cache_budget}: {rows} sequences per generate call; results do not depend on it"
        )
    advice = []
    if g.backend != "vllm":
        advice.append("set generation.kv_cache_budget to a smaller size, or generation.backend=vllm")
    advice += _resident_advice(cfg, bf16)
    phases.append(Phase("rollout", rollout, advice))

    if trains_llm:
        update = {**resident, **grads}
        if g.backend == "vllm" and g.vllm_mode == "colocate" and g.vllm_enable_sleep_mode:
            update = {k: v for k, v in update.items() if not k.startswith("vLLM")}
            notes.append("vLLM sleep mode frees its share during the update (weights re-sync every turn)")
        tokens, rows_mb, width = _micro_batch(run)
        parts = update_activation_bytes(
            shape, tokens, rows_mb, width, rows_mb * run.completion_tokens, compute, residual, attention, t.gradient_checkpointing
        )
        other = update_activation_bytes(
            shape, tokens, rows_mb, width, rows_mb * run.completion_tokens, compute, residual, attention, not t.gradient_checkpointing
        )
        update.update(parts)
        label = f"update ({rows_mb} rows x {width} tokens per micro-batch, gradient checkpointing {'on' if t.gradient_checkpointing else 'off'})"
        phases.append(Phase(label, update, _update_advice(cfg, run, shape, gpu_bytes, sum(update.values()) - sum(parts.values()), compute, residual, attention, bf16)))
        notes.append(
            f"gradient checkpointing {'off' if t.gradient_checkpointing else 'on'} would make the update about "
            f"{format_bytes(sum(update.values()) - sum(parts.values()) + sum(other.values()))}"
        )
    return MemoryPlan(gpu_bytes, phases, notes)


def _budget(setting: str, free: float) -> float | None:
    from memfactory_cli.generation.base import AUTO_KV_SHARE
    from memfactory_cli.models.footprint import parse_bytes

    if setting == "none":
        return None
    if setting == "auto":
        return max(free, 0) * AUTO_KV_SHARE
    return parse_bytes(setting, "generation.kv_cache_budget")


def _micro_batch(run: RunShape, micro_batches: int | None = None) -> tuple[int, int, int]:
    """(tokens, rows, width) of the widest micro-batch: rows split evenly over S, every row as wide as the widest."""
    rows = math.ceil(run.generate_rows * run.rows_per_trajectory / (micro_batches or run.micro_batches))
    width = run.prompt_tokens + run.completion_tokens
    return rows * width, rows, width


def _resident_advice(cfg: RecipeConfig, bf16: bool) -> list[str]:
    t, g = cfg.trainer, cfg.generation
    out = []
    if t.beta != 0 and not cfg.model.lora.enabled and reference_dtype(cfg, bf16) == "float32":
        out.append("trainer.reference_dtype=bfloat16 (or trainer.beta=0: no reference model)")
    if g.backend == "vllm" and g.vllm_mode == "colocate" and not g.vllm_enable_sleep_mode:
        out.append("generation.vllm_enable_sleep_mode=true or a lower generation.vllm_gpu_memory_utilization")
    if not cfg.model.lora.enabled:
        out.append("trainer.optim=adamw_8bit (bitsandbytes), or model.lora.enabled=true with model.dtype=bfloat16")
    return out


def _update_advice(
    cfg: RecipeConfig, run: RunShape, shape: ModelShape, gpu: int, fixed: float, compute: int, residual: int, attention: str, bf16: bool
) -> list[str]:
    t = cfg.trainer
    out = []
    per_device = run.slots // t.gradient_accumulation_steps
    for ga in sorted(d for d in range(t.gradient_accumulation_steps + 1, run.slots + 1) if run.slots % d == 0):
        s = ga * generation_multiple(cfg)
        tokens, rows, width = _micro_batch(run, s)
        need = fixed + sum(
            update_activation_bytes(shape, tokens, rows, width, rows * run.completion_tokens, compute, residual, attention, t.gradient_checkpointing).values()
        )
        if need <= gpu:
            out.append(
                f"trainer.gradient_accumulation_steps={ga} ({run.slots // ga} trajectories, about {rows} rows per "
                f"micro-batch, instead of {per_device} trajectories)"
            )
            break
    if not t.gradient_checkpointing:
        out.append("trainer.gradient_checkpointing=true")
    out += _resident_advice(cfg, bf16)
    return out or ["lower agent chunk/memory budgets"]


def detected_gpu_memory() -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    except (AssertionError, RuntimeError):  # a CUDA probe that answers but no usable device (or a faked probe)
        return None
