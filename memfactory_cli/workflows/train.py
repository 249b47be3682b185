"""``memfactory train``: recipe -> model, agent, env, rewards -> MemGRPOTrainer -> run directory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from memfactory_cli.config import RecipeConfig, load_recipe, to_yaml
from memfactory_cli.errors import UserError
from memfactory_cli.io import atomic_dir, atomic_write_text, ensure_writable_dir
from memfactory_cli.models.loading import load_model, load_tokenizer, resolve_device, resolve_model_path
from memfactory_cli.rewards import build_reward_funcs
from memfactory_cli.workflows.common import build_agent, build_env, eval_generator


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
            f"{world_size} process(es) x {t.gradient_accumulation_steps} accumulation steps"
        )
    return {"per_device_train_batch_size": per_device, "slots": slots}


def resolve_bf16(setting: str, device: str) -> bool:
    import torch

    if setting in ("true", "True", True):
        return True
    if setting in ("false", "False", False):
        return False
    if setting != "auto":
        raise UserError(f"trainer.bf16 must be auto, true or false, not '{setting}'")
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    # bf16 autocast only pays on CPUs with native bf16 (avx512_bf16 / AMX); elsewhere it is slower than fp32.
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def grpo_args(cfg: RecipeConfig, run_dir: Path, device: str, max_answer_tokens: int):
    from trl import GRPOConfig

    t, g = cfg.trainer, cfg.generation
    layout = batch_layout(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    return GRPOConfig(
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
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        seed=t.seed,
        use_cpu=device == "cpu",
        bf16=resolve_bf16(str(t.bf16), device),
        activation_checkpointing=t.gradient_checkpointing,
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps > 0 else "no",
        save_steps=max(t.save_steps, 1),
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        log_completions=False,
    )


def peft_config(cfg: RecipeConfig):
    if not cfg.model.lora.enabled:
        return None
    from peft import LoraConfig

    lora = cfg.model.lora
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules), task_type="CAUSAL_LM"
    )


def _eval_table(before: dict[str, Any], after: dict[str, Any], deltas: dict[str, Any]) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"held-out, n={before['n']}, greedy")
    for col in ("metric", "before", "after", "Δ (paired)"):
        table.add_column(col)
    for m, b in before["metrics"].items():
        a, d = after["metrics"][m], deltas[m]
        table.add_row(
            m, f"{b['mean']:.3f} ± {b['stderr']:.3f}", f"{a['mean']:.3f} ± {a['stderr']:.3f}", f"{d['mean']:+.3f} ± {d['stderr']:.3f}"
        )
    console = Console()
    console.print(table)
    with console.capture() as cap:
        console.print(table)
    return cap.get()


def run(recipe: str, overrides: list[str]) -> Path:
    """Train the recipe; returns the run directory."""
    import torch
    from transformers.trainer_callback import PrinterCallback, ProgressCallback as HFProgress

    from memfactory_cli.trainer.callbacks import MetricsCallback, NullSink, ProgressCallback, RolloutSink, swanlab_callbacks
    from memfactory_cli.trainer.grpo import MemGRPOTrainer
    from memfactory_cli.workflows.evaluate import evaluate_rows, paired_delta

    cfg = load_recipe(recipe, overrides)
    device = resolve_device(cfg.trainer.device)
    batch_layout(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    if cfg.generation.backend != "hf":
        raise UserError(f"generation.backend '{cfg.generation.backend}' is not available yet; use hf")
    reward_funcs, weights = build_reward_funcs(cfg.rewards)
    model_path = resolve_model_path(cfg.model.name_or_path)
    run_dir = ensure_writable_dir(Path(cfg.output.dir))
    atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))

    env = build_env(cfg)
    train_rows = env.rows("train")
    eval_rows = env.rows("eval") if cfg.trainer.eval_before_after else []
    tokenizer = load_tokenizer(model_path)
    agent = build_agent(cfg, tokenizer)
    torch.manual_seed(cfg.trainer.seed)
    model = load_model(cfg.model, device, model_path)

    results: dict[str, Any] = {}
    if eval_rows:
        model.eval()
        results["before"] = evaluate_rows(agent, env, eval_rows, eval_generator(model, tokenizer, cfg.eval), batch_questions=cfg.eval.batch_size)

    args = grpo_args(cfg, run_dir, device, agent.memory.config.max_answer_tokens)
    sink = RolloutSink(run_dir / "rollouts.jsonl", cfg.logging.rollout_samples, cfg.trainer.seed) if cfg.logging.rollout_samples > 0 else NullSink()
    callbacks = [MetricsCallback(run_dir / "metrics.jsonl")]
    callbacks += [ProgressCallback()] if cfg.logging.progress else []
    callbacks += swanlab_callbacks(
        cfg.logging.swanlab, cfg.logging.project, cfg.logging.experiment or run_dir.name, run_dir / "swanlog", json.loads(json.dumps(_plain(cfg)))
    )
    trainer = MemGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=env.train_dataset(train_rows),
        processing_class=tokenizer,
        peft_config=peft_config(cfg),
        callbacks=callbacks,
        agent=agent,
        rollout_sink=sink,
    )
    trainer.reward_weights = torch.tensor(weights, dtype=torch.float32)
    for cb in (PrinterCallback, HFProgress):
        trainer.remove_callback(cb)
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        _finish_swanlab(cfg.logging.swanlab)
    train_seconds = time.perf_counter() - start
    with atomic_dir(run_dir / "final") as tmp:
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))

    if eval_rows:
        model = trainer.model
        model.eval()
        results["after"] = evaluate_rows(agent, env, eval_rows, eval_generator(model, tokenizer, cfg.eval), batch_questions=cfg.eval.batch_size)
        deltas = {m: paired_delta(results["before"]["per_question"], results["after"]["per_question"], m) for m in results["before"]["metrics"]}
        _eval_table(results["before"], results["after"], deltas)
        summary = {
            "n": results["before"]["n"],
            "train_seconds": train_seconds,
            "before": results["before"]["metrics"],
            "after": results["after"]["metrics"],
            "delta": deltas,
        }
        atomic_write_text(run_dir / "eval_before_after.json", json.dumps(summary, indent=2))
    print(f"run directory: {run_dir}  (final model: {run_dir / 'final'})")
    return run_dir


def _plain(cfg: RecipeConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]


def _finish_swanlab(mode: str) -> None:
    if mode == "disabled":
        return
    import swanlab

    if swanlab.has_run():
        swanlab.finish()
