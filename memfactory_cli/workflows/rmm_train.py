"""``memfactory train`` for RMM's linear reranker: online REINFORCE from citations, the LLM frozen.

This is not GRPO: the only weights that learn are the reranker's two d x d maps. Each step rolls out
``trainer.questions_per_step`` questions (prospective reflection, retrieval, Gumbel top-M, answer with citations)
with the frozen LLM sampling at ``generation.temperature``, then takes REINFORCE updates every
``agent.options.batch_size`` questions. The run directory holds ``config.yaml``, ``metrics.jsonl``,
``rollouts.jsonl``, ``checkpoint-N/reranker.pt`` every ``trainer.save_steps`` and ``final/reranker.pt``; with
``trainer.eval_before_after`` the held-out set is evaluated (plain top-M, greedy answers) before and after, overall
and per ``env.group_by`` (``question_type``), into ``eval_before_after.json``.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from memfactory_cli.config import RecipeConfig, to_yaml
from memfactory_cli.errors import UserError
from memfactory_cli.generation.base import HFGenerator
from memfactory_cli.io import atomic_dir, atomic_write_text, ensure_writable_dir
from memfactory_cli.models.loading import load_model, load_tokenizer, resolve_device, resolve_model_path
from memfactory_cli.workflows.common import build_agent, build_env, eval_generator, training_sampling
from memfactory_cli.workflows.evaluate import evaluate_rows, mean_stderr, paired_delta


def _append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()


def _batches(n_rows: int, size: int, seed: int):
    """Questions in a seeded shuffled order, reshuffled at each pass."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < size:
            fresh = list(range(n_rows))
            rng.shuffle(fresh)
            order += fresh
        yield order[:size]
        order = order[size:]


def _swanlab(cfg: RecipeConfig, run_dir: Path) -> Any:
    """A SwanLab run for the loop (offline by default), or None when ``logging.swanlab: disabled``."""
    from memfactory_cli.trainer.callbacks import swanlab_callbacks
    from memfactory_cli.workflows.train import _plain

    mode = cfg.logging.swanlab
    name = cfg.logging.experiment or run_dir.name
    if not swanlab_callbacks(mode, cfg.logging.project, name, run_dir / "swanlog", {}):  # validates mode and key
        return None
    import swanlab

    return swanlab.init(
        project=cfg.logging.project, name=name, mode="online" if mode == "cloud" else "offline",
        log_dir=str(run_dir / "swanlog"), config={"recipe": _plain(cfg)},
    )


def _evaluate(agent: Any, env: Any, rows: list[dict[str, Any]], generator: Any, batch: int) -> dict[str, Any]:
    agent.training = False
    return evaluate_rows(agent, env, rows, generator, batch_questions=batch)


def run(cfg: RecipeConfig) -> Path:
    """Train the linear reranker online; returns the run directory."""
    from transformers import set_seed

    from memfactory_cli.report import before_after_table

    t = cfg.trainer
    for name in ("max_steps", "questions_per_step"):
        if getattr(t, name) <= 0:
            raise UserError(f"trainer.{name} must be positive, got {getattr(t, name)}")
    device = resolve_device(t.device)
    env = build_env(cfg)
    train_rows = env.rows("train")
    eval_rows = env.rows("eval") if t.eval_before_after else []
    model_path = resolve_model_path(cfg.model.name_or_path)
    run_dir = ensure_writable_dir(Path(cfg.output.dir))
    atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    for stale in ("metrics.jsonl", "rollouts.jsonl", "eval_before_after.json"):
        (run_dir / stale).unlink(missing_ok=True)
    tokenizer = load_tokenizer(model_path)
    agent = build_agent(cfg, tokenizer)
    set_seed(t.seed)
    model = load_model(cfg.model, device, model_path).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    sampler = HFGenerator(model, tokenizer, training_sampling(cfg.generation), max_batch=cfg.eval.batch_size)
    greedy = eval_generator(model, tokenizer, cfg.eval)
    before = _evaluate(agent, env, eval_rows, greedy, cfg.eval.batch_size) if eval_rows else None

    tracker = _swanlab(cfg, run_dir)
    batches = _batches(len(train_rows), t.questions_per_step, t.seed)
    rollout_rng = random.Random(t.seed)
    start = time.perf_counter()
    try:
        for step in range(1, t.max_steps + 1):
            step_start = time.perf_counter()
            agent.training = True
            trajectories = agent.rollout(agent.episodes([train_rows[i] for i in next(batches)]), sampler)
            rolled = time.perf_counter()
            learned = agent.learn(trajectories)
            answers = [env.score(tr.answer, tr.episode.row["answers"], ("em", "f1")) for tr in trajectories]
            line = {
                "step": step,
                **learned,
                **agent.rollout_metrics(trajectories),
                "answer/em": sum(a["em"] for a in answers) / len(answers),
                "answer/f1": sum(a["f1"] for a in answers) / len(answers),
                "time/generate_s": rolled - step_start,
                "time/update_s": time.perf_counter() - rolled,
            }
            _append_jsonl(run_dir / "metrics.jsonl", [line])
            if tracker is not None:
                tracker.log({k: v for k, v in line.items() if k != "step"}, step=step)
            if cfg.logging.rollout_samples > 0:
                picked = rollout_rng.sample(trajectories, min(cfg.logging.rollout_samples, len(trajectories)))
                _append_jsonl(run_dir / "rollouts.jsonl", [{"step": step, **tr.to_record()} for tr in picked])
            if cfg.logging.progress:
                print(f"step {step}/{t.max_steps}  reward {line['reranker/reward']:+.3f}  recall@m {line.get('retrieval/recall@m', float('nan')):.3f}")
            if t.save_steps > 0 and step % t.save_steps == 0:
                with atomic_dir(run_dir / f"checkpoint-{step}") as tmp:
                    agent.save(tmp)
    finally:
        if tracker is not None:
            tracker.finish()
    agent.reranker.step()  # flush a partial batch: no gradient is dropped
    agent.training = False
    train_seconds = time.perf_counter() - start
    with atomic_dir(run_dir / "final") as tmp:
        weights = agent.save(tmp)
        note = {"base_model": cfg.model.name_or_path, "llm": "frozen (not trained)", "reranker": weights.name}
        atomic_write_text(tmp / "rmm.json", json.dumps(note, indent=2))
    if before is not None:
        after = _evaluate(agent, env, eval_rows, greedy, cfg.eval.batch_size)
        metrics = [m for m in before["metrics"] if m in after["metrics"]]
        deltas = {m: _paired(before["per_question"], after["per_question"], m) for m in metrics}
        before_after_table(before, after, deltas)
        summary = {
            "n": before["n"],
            "train_seconds": train_seconds,
            "before": before["metrics"],
            "after": after["metrics"],
            "delta": deltas,
            "before_by_group": before.get("by_group"),
            "after_by_group": after.get("by_group"),
        }
        atomic_write_text(run_dir / "eval_before_after.json", json.dumps(summary, indent=2))
    print(f"run directory: {run_dir}  (reranker: {run_dir / 'final' / weights.name})")
    return run_dir


def _paired(before: list[dict[str, float]], after: list[dict[str, float]], metric: str) -> dict[str, float]:
    """Paired delta over the questions where both runs have the metric (recall is None without gold evidence)."""
    pairs = [(b, a) for b, a in zip(before, after) if metric in b and metric in a]
    if len(pairs) == len(before):
        return paired_delta(before, after, metric)
    return mean_stderr([a[metric] - b[metric] for b, a in pairs]) if pairs else {"mean": 0.0, "stderr": 0.0}
