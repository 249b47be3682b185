"""Pieces every workflow assembles: the agent, the environment, the model and a generator."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from memfactory_cli.config.schema import EvalConfig, GenerationConfig, ModelConfig, RecipeConfig
from memfactory_cli.generation.base import Generator, HFGenerator, SamplingParams
from memfactory_cli.generation.vllm import VLLMEngine, VLLMGenerator, load_engine
from memfactory_cli.models.loading import load_model, load_tokenizer, resolve_device, resolve_model_path
from memfactory_cli.registry import registry


@dataclass
class Policy:
    """A resolved model (device, folder, tokenizer) and the agent built for its tokenizer; weights load on demand."""

    model_cfg: ModelConfig
    path: str
    device: str
    tokenizer: Any
    agent: Any

    def load(self, frozen: bool = True) -> Any:
        """The weights for inference (bf16 on CUDA for fp32 recipes: ``models.loading.inference_dtype``), in eval mode;
        ``frozen`` also turns their gradients off (nothing of the LLM learns)."""
        model = load_model(self.model_cfg, self.device, self.path, inference=True).eval()
        if frozen:
            for p in model.parameters():
                p.requires_grad_(False)
        return model


def load_policy(cfg: RecipeConfig, model: str | None = None) -> Policy:
    """The one sequence every command starts with: device, model folder (``model`` overrides the recipe's),
    tokenizer, agent. Bad input fails here, before any weights load."""
    label = model or cfg.model.name_or_path
    device = resolve_device(cfg.trainer.device)
    path = resolve_model_path(label)
    tokenizer = load_tokenizer(path)
    return Policy(dataclasses.replace(cfg.model, name_or_path=label), path, device, tokenizer, build_agent(cfg, tokenizer))


def build_agent(cfg: RecipeConfig, tokenizer: Any) -> Any:
    """Every agent class builds itself from its recipe section: ``from_config(agent_cfg, tokenizer)``."""
    return registry("agent").get(cfg.agent.name).from_config(cfg.agent, tokenizer)


def build_env(cfg: RecipeConfig) -> Any:
    return registry("env").get(cfg.env.name)(cfg.data)


def training_sampling(gen: GenerationConfig) -> SamplingParams:
    return SamplingParams(do_sample=True, temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k)


def eval_sampling(ev: EvalConfig) -> SamplingParams:
    if ev.greedy:
        return SamplingParams(do_sample=False)
    return SamplingParams(do_sample=True, temperature=ev.temperature, top_p=ev.top_p)


def inference_model(cfg: RecipeConfig, policy: Policy) -> Any:
    """What ``eval``, ``infer`` and ``serve`` generate with: ``policy.load()``, or, with ``generation.backend: vllm``,
    a vLLM engine over the same folder in the same dtype (no HF weights loaded)."""
    if cfg.generation.backend != "vllm":
        return policy.load()
    g = cfg.generation
    return load_engine(
        policy.path, policy.tokenizer, policy.model_cfg.dtype, policy.device, g.vllm_max_model_length,
        g.vllm_gpu_memory_utilization, cfg.trainer.seed,
    )


def make_generator(
    model: Any, tokenizer: Any, sampling: SamplingParams, max_batch: int | None, kv_budget: Any = "auto", autocast: Any = "auto"
) -> Generator:
    """A generator over an HF model (KV-bounded batches) or a :class:`VLLMEngine` (which schedules its own batches)."""
    if isinstance(model, VLLMEngine):
        return VLLMGenerator(model, sampling)
    return HFGenerator(model, tokenizer, sampling, max_batch=max_batch, kv_budget=kv_budget, autocast=autocast)


def eval_generator(model: Any, tokenizer: Any, ev: EvalConfig, gen: GenerationConfig | None = None, autocast: Any = "auto") -> Generator:
    """Greedy or sampled eval generation, at most ``eval.batch_size`` sequences and ``gen.kv_cache_budget`` a batch."""
    gen = gen or GenerationConfig()
    return make_generator(model, tokenizer, eval_sampling(ev), ev.batch_size, gen.kv_cache_budget, autocast)
