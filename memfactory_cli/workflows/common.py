"""Pieces every workflow assembles: the agent, the environment, the model and a generator."""

from __future__ import annotations

from typing import Any

from memfactory_cli.config.schema import EvalConfig, GenerationConfig, RecipeConfig
from memfactory_cli.generation.base import HFGenerator, SamplingParams
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


def eval_generator(model: Any, tokenizer: Any, ev: EvalConfig, gen: GenerationConfig | None = None, autocast: Any = "auto") -> HFGenerator:
    """Greedy or sampled eval generation, at most ``eval.batch_size`` sequences and ``gen.kv_cache_budget`` a batch."""
    gen = gen or GenerationConfig()
    return HFGenerator(
        model, tokenizer, eval_sampling(ev), max_batch=ev.batch_size, kv_budget=gen.kv_cache_budget, autocast=autocast
    )
