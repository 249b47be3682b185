"""What memfactory costs on top of TRL: one single-turn GRPO step through ``MemGRPOTrainer`` vs a plain ``GRPOTrainer``.

Same tiny Qwen3 (two identical copies, one per trainer), same data (8 synthetic questions x G=4, chat prompts),
same ``GRPOConfig`` (``trainer.config.grpo_args`` of one recipe), same reward, 24 new tokens per completion.

- plain: ``trl.GRPOTrainer`` tokenises the chat prompts, generates, scores, trains.
- memfactory: ``MemGRPOTrainer`` with a one-turn agent whose prompt is TRL's own tokenisation of the same chat (checked
  equal below), so the only differences are memfactory's: ``rollout_func`` through the agent and
  ``TrainerGenerator``, the row expansion and padding, the rollout metrics, and the metrics.jsonl callback.

Both trainers live in one process, so memfactory's two log-prob switches (module-level in TRL:
``score_only_completion_positions``, ``lean_cpu_logprob_tiles``) apply to both: this measures the framework's
overhead, not those switches (``bench/logprobs.py`` does; with a 916-token vocabulary they change little here).

Each repeat calls ``train()`` for one optimizer step on each trainer in turn; the figure is the step itself (from
``on_step_begin`` to ``on_step_end``: generation, rewards, loss, backward, optimizer), median over repeats.
Last line: ``ratio=X`` = step(memfactory) / step(plain); goal <= 1.10.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (sets the offline environment)
from transformers import TrainerCallback

from memfactory_cli.agents.base import BaseAgent, Episode, Trajectory, Turn

QUESTIONS, G, COMPLETION, REPEATS = 8, 4, 24, 7


def length_reward(prompts, completions, **kwargs):
    """Reward variance from a random model, so advantages and gradients are non-zero on both sides."""
    from memfactory_cli.rewards import completion_text

    return [len(completion_text(c)) / 10.0 for c in completions]


class OneTurnAgent(BaseAgent):
    """Answers in one turn from the chat prompt, tokenised exactly as TRL does it (``trainer._tokenize_prompts``)."""

    name = "one_turn"

    def __init__(self, tokenize):
        super().__init__(None)
        self.tokenize = tokenize

    @property
    def max_completion_tokens(self) -> int:
        return COMPLETION

    def episodes(self, rows):
        ids, _, _ = self.tokenize([r["prompt"] for r in rows])
        return [Episode(r, list(p), []) for r, p in zip(rows, ids)]

    def rollout(self, episodes, generator):
        completions = generator.generate([e.question_ids for e in episodes], COMPLETION)
        return [Trajectory(e, [Turn("answer", e.question_ids, c, False)]) for e, c in zip(episodes, completions)]


class StepClock(TrainerCallback):
    def __init__(self):
        self.start, self.seconds = 0.0, []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self.start)


def main() -> None:
    import torch
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOTrainer

    from memfactory_cli.config import load_recipe
    from memfactory_cli.trainer.callbacks import MetricsCallback, NullSink
    from memfactory_cli.trainer.config import grpo_args
    from memfactory_cli.trainer.grpo import MemGRPOTrainer
    from memfactory_cli.workflows.common import build_env

    torch.set_num_threads(1)  # a shared 2-core machine: two spinning threads per process ran far slower
    from _common import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer()
    model.train()
    tmp = Path(tempfile.mkdtemp(prefix="mf-overhead-"))
    cfg = load_recipe(None, [
        f"trainer.questions_per_step={QUESTIONS}", f"trainer.num_generations={G}", "trainer.max_steps=1",
        "trainer.device=cpu", "trainer.bf16=false", "trainer.learning_rate=1e-5", f"data.synth.n_train={QUESTIONS * 4}",
        "data.synth.filler_sentences=2",
    ])  # fmt: skip
    env = build_env(cfg)
    dataset = env.train_dataset(env.rows("train"))
    clocks = {"plain": StepClock(), "memfactory": StepClock()}
    plain = GRPOTrainer(
        model=copy.deepcopy(model), reward_funcs=[length_reward], args=grpo_args(cfg, tmp / "plain", "cpu", COMPLETION, [1.0]),
        train_dataset=dataset, processing_class=tok, callbacks=[clocks["plain"]],
    )  # fmt: skip
    ours = MemGRPOTrainer(
        model=copy.deepcopy(model), reward_funcs=[length_reward], args=grpo_args(cfg, tmp / "ours", "cpu", COMPLETION, [1.0]),
        train_dataset=dataset, processing_class=tok, callbacks=[clocks["memfactory"], MetricsCallback(tmp / "metrics.jsonl")],
        agent=None, rollout_sink=NullSink(),
    )  # fmt: skip
    ours.agent = OneTurnAgent(ours._tokenize_prompts)
    for trainer in (plain, ours):
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
    rows = [dataset[i] for i in range(2)]
    assert [e.question_ids for e in ours.agent.episodes(rows)] == [list(p) for p in plain._tokenize_prompts([r["prompt"] for r in rows])[0]]

    trainers = {"plain": plain, "memfactory": ours}
    for _ in range(REPEATS + 1):  # the first round warms up
        for trainer in trainers.values():
            trainer.train()
    step = {name: statistics.median(clock.seconds[1:]) for name, clock in clocks.items()}
    rows_logged = [line for line in (tmp / "metrics.jsonl").read_text().splitlines() if line]
    print(f"{QUESTIONS} questions x G={G}, {COMPLETION} new tokens, {REPEATS} alternated steps each (+1 warm-up)")
    print(f"plain GRPOTrainer step   {step['plain']:.3f} s")
    print(f"memfactory step          {step['memfactory']:.3f} s   ({len(rows_logged)} metrics.jsonl lines written)")
    print("goal: ratio <= 1.10")
    print(f"ratio={step['memfactory'] / step['plain']:.3f}")


if __name__ == "__main__":
    main()
