"""Pieces every workflow assembles: the agent, the environment, the model and a generator."""

from __future__ import annotations

import dataclasses
from typing import Any

from memfactory_cli.config.schema import EvalConfig, GenerationConfig, RecipeConfig
from memfactory_cli.generation.base import Generator, HFGenerator, SamplingParams
from memfactory_cli.generation.vllm import VLLMEngine, VLLMGenerator, load_engine
from memfactory_cli.models.loading import load_model
from memfactory_cli.registry import registry


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


def inference_model(cfg: RecipeConfig, device: str, path: str, tokenizer: Any, label: str | None = None) -> Any:
    """What ``eval``, ``infer`` and ``serve`` generate with: the HF model in eval mode, or, with
    ``generation.backend: vllm``, a vLLM engine over the same folder in the same dtype (no HF weights loaded)."""
    if cfg.generation.backend == "vllm":
        g = cfg.generation
        return load_engine(
            path, tokenizer, cfg.model.dtype, device, g.vllm_max_model_length, g.vllm_gpu_memory_utilization, cfg.trainer.seed
        )
    model_cfg = dataclasses.replace(cfg.model, name_or_path=label) if label else cfg.model
    return load_model(model_cfg, device, path).eval()


def make_generator(model: Any, tokenizer: Any, sampling: SamplingParams, max_batch: int | None) -> Generator:
    """A generator over an HF model or a :class:`VLLMEngine` (which schedules its own batches)."""
    if isinstance(model, VLLMEngine):
        return VLLMGenerator(model, sampling)
    return HFGenerator(model, tokenizer, sampling, max_batch=max_batch)


def eval_generator(model: Any, tokenizer: Any, ev: EvalConfig) -> Generator:
    return make_generator(model, tokenizer, eval_sampling(ev), ev.batch_size)
