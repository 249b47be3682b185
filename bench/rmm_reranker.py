"""Does RMM's linear reranker learn from citations? Recall@M before and after online REINFORCE on a synthetic task.

Each question about a person comes with ~20 stored turns (``memory: turn``): chit-chat, turns that echo the
question's wording without answering it, other people's facts, and one evidence turn written as a terse
"Reminder: ..." that the frozen MiniLM embedder ranks low. The answering LLM is a stand-in that always cites the
evidence turn when it is among the M shown (and writes ``[NO_CITE]`` otherwise), so "one memory is always the cited
one". Everything else is the real agent: real embeddings, retrieval of K=20, Gumbel top-M (M=5, tau=0.5) while
training, deterministic top-M when measuring, REINFORCE with +1/-1 rewards, baseline 0.5, Adam lr 1e-3, batch 4.

Recall@M is measured on held-out people before and after training. Last line: ``recall_before=X recall_after=Y``.
Run: python bench/rmm_reranker.py [--steps 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common  # noqa: E402,F401  (offline environment)

TOPICS = {
    "instrument": ("Which instrument does {p} play?", ["cello", "violin", "banjo", "flute", "harp", "drums"]),
    "city": ("Which city does {p} live in?", ["Lisbon", "Osaka", "Denver", "Tallinn", "Quito", "Perth"]),
    "job": ("What is {p}'s job?", ["nurse", "pilot", "baker", "chemist", "lawyer", "plumber"]),
    "pet": ("What pet does {p} have?", ["cat", "parrot", "rabbit", "hamster", "turtle", "beagle"]),
    "sport": ("Which sport does {p} play?", ["tennis", "rugby", "squash", "hockey", "golf", "rowing"]),
}
ECHOES = [
    "{p}: People often ask me about my {t}, it is a long story.",
    "Assistant: Many listeners wonder about {p}'s {t}.",
    "{p}: I was thinking about the {t} question again today.",
    "Assistant: Talking about your {t} sounds fun, {p}.",
    "{p}: My cousin keeps asking which {t} I would pick.",
]
OTHERS = ["{o}'s {t} is {v}, {o} told me.", "{o} mentioned the {t} {v} at dinner."]
FILLER = [
    "{p}: The weather was lovely today.",
    "Assistant: That sounds nice, tell me more.",
    "{p}: I watched a documentary about whales.",
    "{p}: My coffee went cold again this morning.",
    "{p}: The train was late by ten minutes.",
    "Assistant: Delays are frustrating.",
    "{p}: I cleaned the kitchen on Sunday.",
    "Assistant: A tidy kitchen is a good start to the week.",
]
TRAIN_PEOPLE = ["Ava", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena"]
EVAL_PEOPLE = ["Mira", "Noor", "Otto", "Pia", "Quin", "Rosa", "Sami", "Tess"]


def make_rows(people: list[str], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        p, topic = rng.choice(people), rng.choice(sorted(TOPICS))
        question, values = TOPICS[topic]
        value = rng.choice(values)
        lines = [e.format(p=p, t=topic) for e in ECHOES]
        others = [o for o in TRAIN_PEOPLE + EVAL_PEOPLE if o != p]
        lines += [rng.choice(OTHERS).format(o=rng.choice(others), t=topic, v=rng.choice(values)) for _ in range(4)]
        lines += [f.format(p=p) for f in rng.sample(FILLER, 6)]
        rng.shuffle(lines)
        evidence = f"Reminder: {value}, noted by {p}."
        lines.insert(rng.randrange(len(lines) + 1), evidence)
        turns = [{"speaker": "note", "text": t, "has_answer": t == evidence} for t in lines]
        rows.append({"id": f"q{seed}-{i}", "question": question.format(p=p), "answers": [value], "question_type": topic,
                     "sessions": [{"id": f"s{i}", "date": "2024-01-01", "turns": turns}]})
    return rows


class CitingStandIn:
    """The answering LLM's stand-in: cites the shown memory holding the reminder, else ``[NO_CITE]``."""

    LINE = re.compile(r"^\[(\d+)\] \([^)]*\) (.*)$", re.M)

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        out = []
        for prompt in prompts:
            text = self.tokenizer.decode(prompt)
            hits = [(int(n), s) for n, s in self.LINE.findall(text) if s.startswith("note: Reminder:")]
            reply = f"\\boxed{{{hits[0][1].split()[2].rstrip(',')}}} [{hits[0][0]}]" if hits else "\\boxed{unknown} [NO_CITE]"
            out.append(self.tokenizer(reply, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id])
        return out


def recall_at_m(agent, rows, generator) -> float:
    agent.training = False
    trajectories = agent.rollout(agent.episodes(rows), generator)
    return sum(t.scores["recall@m"] for t in trajectories) / len(trajectories)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps of 4 questions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from memfactory_cli.agents.rmm import RMMAgent, RMMConfig
    from memfactory_cli.models.aliases import tiny_qwen3_bpe
    from memfactory_cli.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_qwen3_bpe()))
    agent = RMMAgent(tokenizer, {"retriever": {"name": "embedding"}}, "linear", RMMConfig(memory="turn", seed=args.seed))
    llm = CitingStandIn(tokenizer)
    train, held_out = make_rows(TRAIN_PEOPLE, 64, args.seed), make_rows(EVAL_PEOPLE, 48, args.seed + 1)
    start = time.perf_counter()
    before = recall_at_m(agent, held_out, llm)
    rng = random.Random(args.seed)
    for step in range(1, args.steps + 1):
        agent.training = True
        trajectories = agent.rollout(agent.episodes(rng.sample(train, 4)), llm)
        learned = agent.learn(trajectories)
        if step % 10 == 0:
            print(f"step {step:3d}  reward {learned.get('reranker/reward', float('nan')):+.2f}  train recall@m "
                  f"{sum(t.scores['recall@m'] for t in trajectories) / len(trajectories):.2f}")
    agent.reranker.step()
    after = recall_at_m(agent, held_out, llm)
    recall_k = sum(t.scores["recall@k"] for t in agent.rollout(agent.episodes(held_out), llm)) / len(held_out)
    print(f"held-out n={len(held_out)}  K=20 M=5 tau=0.5 lr=1e-3  recall@K={recall_k:.3f}  {time.perf_counter() - start:.1f} s")
    print(f"recall_before={before:.3f} recall_after={after:.3f}")


if __name__ == "__main__":
    main()
