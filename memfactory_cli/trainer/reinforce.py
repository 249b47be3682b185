"""``ReinforceTrainer``: the learner of agents whose own small weights learn online, the LLM frozen (RMM's linear
reranker, ``learner = "reinforce"``), beside ``MemGRPOTrainer`` for the agents GRPO trains.

This is not GRPO: the only weights that learn are the agent's (the reranker's two d x d maps). Each step rolls out
``trainer.questions_per_step`` questions with the frozen LLM sampling at ``generation.temperature`` and hands the
trajectories to ``agent.learn`` (REINFORCE from citations, an optimizer step every ``agent.options.batch_size``
questions). Like the GRPO run it writes ``metrics.jsonl`` (one line per step), ``curves.png``, ``rollouts.jsonl``
(``logging.rollout_samples`` per step, also as SwanLab text), SwanLab (offline by default), ``checkpoint-N/`` every
``trainer.save_steps`` and ``final/``; ``memfactory train`` (``workflows/train.py``) wraps it with the same
before/after evaluation.

The agent provides ``learn(trajectories) -> metrics``, ``save(folder) -> path``, ``finish_learning()`` and a
``training`` flag (sampled selection while training, deterministic in eval).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memfactory_cli.config.schema import RecipeConfig
from memfactory_cli.envs.base import Env
from memfactory_cli.generation.base import Generator
from memfactory_cli.io import atomic_dir, atomic_write_text
from memfactory_cli.trainer.callbacks import Curves, JsonlSink, NullSink, RolloutSink, SwanLabTraces, swanlab_run


def question_batches(n_rows: int, size: int, seed: int) -> Iterator[list[int]]:
    """Row indices ``size`` at a time in a seeded shuffled order, reshuffled at each pass."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < size:
            fresh = list(range(n_rows))
            rng.shuffle(fresh)
            order += fresh
        yield order[:size]
        order = order[size:]


class ReinforceTrainer:
    """Online REINFORCE over the agent's own weights; ``train()`` then ``save_final()``."""

    def __init__(
        self, cfg: RecipeConfig, agent: Any, env: Env, train_rows: list[dict[str, Any]], sampler: Generator, run_dir: Path
    ):
        self.cfg, self.agent, self.env, self.rows, self.sampler, self.run_dir = cfg, agent, env, train_rows, sampler, run_dir
        self.metrics = JsonlSink(run_dir / "metrics.jsonl")
        self.curves = Curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        samples, mirrors = cfg.logging.rollout_samples, [SwanLabTraces()] if cfg.logging.swanlab != "disabled" else []
        self.rollouts = RolloutSink(run_dir / "rollouts.jsonl", samples, cfg.trainer.seed, mirrors) if samples > 0 else NullSink()

    def step(self, step: int, indices: list[int]) -> dict[str, Any]:
        """One rollout and the agent's update; returns the step's metrics line."""
        start = time.perf_counter()
        self.agent.training = True
        trajectories = self.agent.rollout(self.agent.episodes([self.rows[i] for i in indices]), self.sampler)
        rolled = time.perf_counter()
        learned = self.agent.learn(trajectories)
        scored = [self.env.score(tr.answer, tr.episode.row["answers"], ("em", "f1")) for tr in trajectories]
        answers = [a for a in scored if None not in a.values()]  # a row without gold has no score, not 0
        self.rollouts.write(step, trajectories)
        return {
            "step": step,
            **learned,
            **self.agent.rollout_metrics(trajectories),
            **({"answer/em": sum(a["em"] for a in answers) / len(answers), "answer/f1": sum(a["f1"] for a in answers) / len(answers)} if answers else {}),
            "time/generate_s": rolled - start,
            "time/update_s": time.perf_counter() - rolled,
        }

    def train(self) -> None:
        t, logging = self.cfg.trainer, self.cfg.logging
        tracker = swanlab_run(logging, self.run_dir, self.cfg)
        batches = question_batches(len(self.rows), t.questions_per_step, t.seed)
        try:
            for step in range(1, t.max_steps + 1):
                line = self.step(step, next(batches))
                self.metrics.append(line)
                self.curves.draw()
                if tracker is not None:
                    tracker.log({k: v for k, v in line.items() if k != "step"}, step=step)
                if logging.progress:
                    recall = line.get("retrieval/recall@m", float("nan"))
                    print(f"step {step}/{t.max_steps}  reward {line.get('reranker/reward', float('nan')):+.3f}  recall@m {recall:.3f}")
                if t.save_steps > 0 and step % t.save_steps == 0:
                    with atomic_dir(self.run_dir / f"checkpoint-{step}") as tmp:
                        self.agent.save(tmp)
        finally:
            if tracker is not None:
                tracker.finish()
        self.curves.draw(force=True)
        self.agent.finish_learning()  # a partial batch is stepped too: no gradient is dropped
        self.agent.training = False

    def save_final(self) -> Path:
        """``final/``: the agent's weights and ``<agent>.json``, which names the frozen base model."""
        with atomic_dir(self.run_dir / "final") as tmp:
            weights = self.agent.save(tmp)
            note = {"base_model": self.cfg.model.name_or_path, "llm": "frozen (not trained)", "weights": weights.name}
            atomic_write_text(tmp / f"{self.cfg.agent.name}.json", json.dumps(note, indent=2))
        return self.run_dir / "final" / weights.name
