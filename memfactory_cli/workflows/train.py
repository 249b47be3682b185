"""``memfactory train``: recipe -> model, agent, env, rewards -> the agent's learner -> run directory.

The learner is what the agent declares (``BaseAgent.learner_for``): ``grpo`` trains the LLM with ``MemGRPOTrainer``
(``trainer/grpo.py``, settings from ``trainer/config.py``), ``reinforce`` trains the agent's own weights with the LLM
frozen (``trainer/reinforce.py``). Both are wrapped by the same held-out evaluation before and after.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memfactory_cli.config import RecipeConfig, load_recipe, to_container
from memfactory_cli.errors import Interrupted, UserError
from memfactory_cli.io import atomic_write_text, ensure_writable_dir
from memfactory_cli.models.loading import load_model, load_tokenizer, resolve_device, resolve_model_path
from memfactory_cli.registry import registry
from memfactory_cli.rewards import build_reward_funcs
from memfactory_cli.trainer.config import (
    batch_layout,
    generation_fields,
    grpo_args,
    peft_config,
    resolve_bf16,
    world_size,
)
from memfactory_cli.trainer.vllm_sync import synced_engine
from memfactory_cli.workflows import launch
from memfactory_cli.workflows.common import build_agent, build_env, eval_generator, load_policy
from memfactory_cli.workflows.resume import prepare_run_dir


@dataclass
class TrainingRun:
    """Everything ``train`` assembles, kept together so tests and tools can drive the pieces."""

    cfg: RecipeConfig
    run_dir: Path
    tokenizer: Any
    agent: Any
    env: Any
    trainer: Any
    eval_rows: list[dict[str, Any]]
    checkpoint: Path | None = None  # where training resumes from (None: from the start)


def build(cfg: RecipeConfig, rollout_sink: Any = None, checkpoint: Path | None = None) -> TrainingRun:
    """Validate, load and wire everything up to a ready ``MemGRPOTrainer``; fails fast on user errors."""
    import torch
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_callback import ProgressCallback as HFProgress

    from memfactory_cli.trainer.callbacks import (
        CurvesCallback,
        MetricsCallback,
        NullSink,
        ProgressCallback,
        RolloutSink,
        SwanLabTraces,
        swanlab_callbacks,
    )
    from memfactory_cli.trainer.grpo import MemGRPOTrainer

    device = resolve_device(cfg.trainer.device)
    batch_layout(cfg, world_size())
    generation_fields(cfg.generation, device)
    reward_funcs, weights = build_reward_funcs(cfg.rewards)
    registry("agent").get(cfg.agent.name)
    registry("env").get(cfg.env.name)
    run_dir = ensure_writable_dir(Path(cfg.output.dir))
    launch.bind_process(device)  # the process group and this rank's GPU, before anything loads
    with launch.main_process_first() as main_process:  # rank 0 fills the caches, then the others read them
        model_path = resolve_model_path(cfg.model.name_or_path)
        if main_process:
            prepare_run_dir(run_dir, cfg, checkpoint)
        env = build_env(cfg)
        train_rows = env.rows("train")
        eval_rows = env.rows("eval") if cfg.trainer.eval_before_after else []
    tokenizer = load_tokenizer(model_path)
    agent = build_agent(cfg, tokenizer)
    torch.manual_seed(cfg.trainer.seed)
    model = load_model(cfg.model, device, model_path, autocast=resolve_bf16(str(cfg.trainer.bf16), device))

    dashboards = swanlab_callbacks(
        cfg.logging.swanlab, cfg.logging.project, cfg.logging.experiment or run_dir.name, run_dir / "swanlog", to_container(cfg)
    )
    if rollout_sink is None:
        samples, mirrors = cfg.logging.rollout_samples, [SwanLabTraces()] if dashboards else []
        rollout_sink = RolloutSink(run_dir / "rollouts.jsonl", samples, cfg.trainer.seed, mirrors) if samples > 0 else NullSink()
    callbacks = [MetricsCallback(run_dir / "metrics.jsonl"), CurvesCallback(run_dir / "metrics.jsonl", run_dir / "curves.png")]
    callbacks += [ProgressCallback()] if cfg.logging.progress else []
    callbacks += dashboards
    trainer = MemGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=grpo_args(cfg, run_dir, device, agent.max_completion_tokens, weights),
        train_dataset=env.train_dataset(train_rows),
        processing_class=tokenizer,
        peft_config=peft_config(cfg),
        callbacks=callbacks,
        agent=agent,
        rollout_sink=rollout_sink,
    )
    for cb in (PrinterCallback, HFProgress):
        trainer.remove_callback(cb)
    if launch.is_main_process():
        launch.record_launch(run_dir, trainer.accelerator.state)
    return TrainingRun(cfg, run_dir, tokenizer, agent, env, trainer, eval_rows, checkpoint)


def save_final(run: TrainingRun) -> Path:
    with launch.shared_atomic_dir(run.run_dir / "final") as tmp:
        run.trainer.save_model(str(tmp))  # collective under ZeRO-3/FSDP; writes on rank 0 only
        if launch.is_main_process():
            run.tokenizer.save_pretrained(str(tmp))
    return run.run_dir / "final"


def _evaluate(run: TrainingRun) -> dict[str, Any]:
    import torch

    from memfactory_cli.workflows.evaluate import evaluate_rows

    model = run.trainer.model
    was_training = model.training
    model.eval()
    try:
        engine = synced_engine(run.trainer) if run.trainer.use_vllm else model  # the rollouts' own engine
        # the training compute dtype: the model is not (yet) accelerate-prepared, so its forward is not autocast
        autocast = torch.bfloat16 if run.trainer.args.bf16 else None
        generator = eval_generator(engine, run.tokenizer, run.cfg.eval, run.cfg.generation, autocast=autocast)
        return evaluate_rows(run.agent, run.env, run.eval_rows, generator, batch_questions=run.cfg.eval.batch_size)
    finally:
        model.train(was_training)


def run(recipe: str, overrides: list[str], resume: str | None = None) -> Path:
    """Train the recipe (from ``resume``: ``auto`` or a checkpoint folder) with the agent's learner; returns the run
    directory."""
    from memfactory_cli.workflows.check import run_checks

    cfg = load_recipe(recipe, overrides)
    launch.pin_single_gpu(cfg)  # before the checks initialise CUDA
    report = run_checks(cfg, "train", resume=resume)
    if launch.is_main_process():
        print(report.summary())
    if learner(cfg) == "reinforce":
        if resume is not None:
            raise UserError(f"--resume is not supported by agent '{cfg.agent.name}' (its learner is reinforce)")
        return run_reinforce(cfg)
    if launch.should_launch(cfg):
        return launch.relaunch(cfg, recipe, overrides, resume)
    if resume == "auto" and report.checkpoint is None and launch.is_main_process():
        print(f"note: no checkpoint in {cfg.output.dir} yet; starting from step 0")
    training = build(cfg, checkpoint=report.checkpoint)
    before = _before_eval(training)
    start = time.perf_counter()
    interrupt = _train(training, recipe, overrides)
    train_seconds = time.perf_counter() - start
    if interrupt is not None:
        raise interrupt
    final = save_final(training)
    if before is not None:  # every rank evaluates (sharded weights need all of them); rank 0 reports
        after = _evaluate(training)
        if launch.is_main_process():
            _report_before_after(training.run_dir, before, after, train_seconds)
    if launch.is_main_process():
        print(f"run directory: {training.run_dir}  (final model: {final}, curves: {training.run_dir / 'curves.png'})")
    return training.run_dir


def learner(cfg: RecipeConfig) -> str:
    """What trains this recipe's agent: ``grpo`` (``MemGRPOTrainer``) or ``reinforce`` (``ReinforceTrainer``)."""
    return registry("agent").get(cfg.agent.name).learner_for(cfg.agent)


def run_reinforce(cfg: RecipeConfig) -> Path:
    """``memfactory train`` for an agent whose own weights learn online with the LLM frozen (RMM's linear reranker)."""
    from transformers import set_seed

    from memfactory_cli.generation.base import HFGenerator
    from memfactory_cli.trainer.reinforce import ReinforceTrainer
    from memfactory_cli.workflows.common import training_sampling
    from memfactory_cli.workflows.evaluate import evaluate_rows

    env = build_env(cfg)
    train_rows = env.rows("train")
    eval_rows = env.rows("eval") if cfg.trainer.eval_before_after else []
    policy = load_policy(cfg)
    agent, tokenizer = policy.agent, policy.tokenizer
    run_dir = ensure_writable_dir(Path(cfg.output.dir))
    prepare_run_dir(run_dir, cfg, None)
    set_seed(cfg.trainer.seed)
    model = policy.load(frozen=True)
    sampler = HFGenerator(
        model, tokenizer, training_sampling(cfg.generation), max_batch=cfg.eval.batch_size, kv_budget=cfg.generation.kv_cache_budget
    )
    greedy = eval_generator(model, tokenizer, cfg.eval, cfg.generation)
    if hasattr(agent, "reflector"):  # RMM: the frozen LLM reflects each conversation once, greedily, for train and eval
        agent.reflector = greedy
    if hasattr(agent, "online"):  # the before/after eval measures the weights as trained; `memfactory eval` adapts online
        agent.online = False
    trainer = ReinforceTrainer(cfg, agent, env, train_rows, sampler, run_dir)
    before = evaluate_rows(agent, env, eval_rows, greedy, batch_questions=cfg.eval.batch_size) if eval_rows else None
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    final = trainer.save_final()
    if before is not None:
        after = evaluate_rows(agent, env, eval_rows, greedy, batch_questions=cfg.eval.batch_size)
        _report_before_after(run_dir, before, after, train_seconds)
    print(f"run directory: {run_dir}  (learned weights: {final})")
    return run_dir


def _report_before_after(run_dir: Path, before: dict[str, Any], after: dict[str, Any], train_seconds: float) -> None:
    from memfactory_cli.report import before_after_table
    from memfactory_cli.workflows.evaluate import before_after

    summary = before_after(before, after, train_seconds)
    before_after_table(before, after, summary["delta"])
    atomic_write_text(run_dir / "eval_before_after.json", json.dumps(summary, indent=2))


def _train(training: TrainingRun, recipe: str, overrides: list[str]) -> Interrupted | None:
    """``trainer.train()``, resumed when there is a checkpoint; SIGINT/SIGTERM save a checkpoint and stop."""
    from memfactory_cli.trainer.callbacks import InterruptCallback, finish_swanlab
    from memfactory_cli.trainer.checkpoints import interrupt_guard

    trainer = training.trainer
    resume_from = str(training.checkpoint) if training.checkpoint is not None else None
    with interrupt_guard() as interrupt:
        trainer.add_callback(InterruptCallback(interrupt, trainer.accelerator, trainer.at_generation_boundary))
        try:
            trainer.train(resume_from_checkpoint=resume_from)
        finally:
            finish_swanlab(training.cfg.logging.swanlab)
    if interrupt.checkpoint is None:
        return None
    command = shlex.join(["memfactory", "train", recipe, *overrides, "--resume", "auto"])
    return Interrupted(
        f"{interrupt.name}: stopped after step {trainer.state.global_step}, checkpoint saved at {interrupt.checkpoint}; "
        f"resume with: {command}",
        interrupt.exit_code,
    )


def _before_eval(training: TrainingRun) -> dict[str, Any] | None:
    """The held-out eval before training: run on a fresh start and kept, read back on a resume."""
    if not training.eval_rows:
        return None
    path = training.run_dir / "eval_before.json"
    if training.checkpoint is not None:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        print("note: no eval_before.json from the start of this run; skipping the before/after comparison")
        return None
    before = _evaluate(training)
    kept = {k: before[k] for k in ("n", "metrics", "per_question", "retention")}
    if launch.is_main_process():
        atomic_write_text(path, json.dumps(kept))
    return kept
