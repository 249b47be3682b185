"""Which Memory-R1 role has reward variance at step 0? GRPO learns only from groups whose rewards differ.

For each role, a few states (manager: ``synth_dialogue_turns_train`` rows; answer agent:
``synth_dialogue_train`` rows) are rolled out G times at temperature 1.0 with the untrained policy, exactly as the
trainer would (the real agent, the frozen greedy answer agent for the manager's outcome). Printed per role: the share
of groups with a nonzero reward std (F1 outcome), the mean within-group std, and validity (valid operation plans for
the manager, marked answers for the answer agent). The role with signal is the one a learning run should train.

Run: python bench/memory_r1_variance.py [--model smollm2-135m-instruct] [--states 6] [--g 4]
Last line: ``manager_signal=X answer_signal=Y`` (shares of groups with reward variance).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common  # noqa: E402,F401  (offline environment)


def groups(agent, rows, generator, g: int) -> tuple[list[list[float]], list[bool]]:
    episodes = [e for e in agent.episodes(rows) for _ in range(g)]
    trajectories = agent.rollout(episodes, generator)
    rewards = [None if t.extras["mr1_outcome"] is None else t.extras["mr1_outcome"]["f1"] for t in trajectories]
    valid = [bool(t.extras["mr1_format"]) for t in trajectories]
    return [[r for r in rewards[i : i + g] if r is not None] for i in range(0, len(rewards), g)], valid


def report(name: str, grouped: list[list[float]], valid: list[bool]) -> float:
    stds = [statistics.pstdev(x) if len(x) > 1 else 0.0 for x in grouped]
    signal = sum(s > 0 for s in stds) / len(stds)
    mean = sum(sum(x) for x in grouped) / max(1, sum(len(x) for x in grouped))
    print(f"{name:8s} groups={len(stds)}  with variance={signal:.2f}  mean std={sum(stds) / len(stds):.3f}  "
          f"mean F1={mean:.3f}  valid={sum(valid) / len(valid):.2f}")
    return signal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--states", type=int, default=6)
    parser.add_argument("--g", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import set_seed

    from memfactory_cli.agents.memory_r1 import MemoryR1Agent, MemoryR1Config, Role
    from memfactory_cli.config.schema import DataConfig, ModelConfig
    from memfactory_cli.data.sources import load_rows
    from memfactory_cli.generation.base import HFGenerator, SamplingParams
    from memfactory_cli.models.loading import load_model, load_tokenizer, resolve_model_path

    set_seed(args.seed)
    path = resolve_model_path(args.model)
    tokenizer = load_tokenizer(path)
    model = load_model(ModelConfig(name_or_path=args.model, dtype="float32"), "cpu", path).eval()
    policy = HFGenerator(model, tokenizer, SamplingParams(do_sample=True, temperature=1.0), max_batch=16)
    frozen = Role(tokenizer, HFGenerator(model, tokenizer, SamplingParams(do_sample=False), max_batch=16))
    data = DataConfig(synth={"n_train": args.states, "sessions": 3, "filler_per_session": 2, "facts_per_speaker": 2}, seed=args.seed)
    modules = {"retriever": {"name": "embedding"}, "updater": {"name": "memory_manager", "max_new_tokens": 96, "top_k": 4}}
    options = MemoryR1Config(manager_window=12, memories_per_speaker=4, max_answer_tokens=48)
    start = time.perf_counter()
    manager = MemoryR1Agent(tokenizer, modules, "manager", options)
    manager.set_frozen(frozen)
    turn_rows = load_rows("synth_dialogue_turns_train", data)[: args.states]
    m_signal = report("manager", *groups(manager, turn_rows, policy, args.g))
    answerer = MemoryR1Agent(tokenizer, modules, "answer", options)
    question_rows = load_rows("synth_dialogue_train", data)[: args.states]
    a_signal = report("answer", *groups(answerer, question_rows, policy, args.g))
    print(f"model={args.model} G={args.g} T=1.0  {time.perf_counter() - start:.0f} s")
    print(f"manager_signal={m_signal:.2f} answer_signal={a_signal:.2f}")


if __name__ == "__main__":
    main()
