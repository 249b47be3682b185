"""Does RMM's reranker learn *query-dependent* relevance? Held-out Recall@5, a query-shuffled control, online mode.

Each question asks one of ten facts about a person (city, pet, job, instrument, ...). The person's ~26 stored turns
(``memory: turn``, so the bank is larger than K = 20) hold all ten facts, each in an oblique topic-specific phrasing
("my keys now open a door in Lisbon" for the city), plus chit-chat, turns that echo a topic's name, and other
people's facts. Ten fact-like turns compete for M = 5 slots, so a query-independent preference ("keep fact-like
turns") cannot reach recall 1: only a reranker that maps the asked topic to its phrasing can.

The answering LLM is a stand-in that reads the row's gold value (looked up from the session date shown with every
memory, so it cites by the row, not by the question text) and cites the shown memory holding it, else
``[NO_CITE]``. Everything else is the real agent: MiniLM embeddings, K=20, Gumbel top-M (M=5, tau=0.5) in training,
top-M when measuring, +1/-1 rewards, baseline 0.5, Adam lr 1e-3, batch 4.

Three measurements on held-out people (unseen names):

1. ``trained``: Recall@5 before and after training on true (question, bank) pairs;
2. ``shuffled``: the same training with every question swapped for another row's (the citations still follow the
   row): the reranker can only learn a query-independent preference, which must not pass;
3. ``online``: a fresh reranker learning prequentially on the held-out stream (``options.online``): running recall.

Last line: ``recall_before=X trained_after=Y shuffled_after=Z online_first_half=A online_second_half=B``.
Run: python bench/rmm_query_dependent.py [--steps 100] [--seed 0]
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
    "city": ("Which city does {p} live in?", "my keys now open a door in {v}", ["Lisbon", "Osaka", "Denver", "Tallinn", "Quito", "Perth"]),
    "pet": ("What pet does {p} have?", "my {v} woke me at dawn again, the little rascal", ["beagle", "parrot", "rabbit", "hamster", "tortoise", "ferret"]),
    "job": ("What is {p}'s job?", "the clinic signed off my {v} timesheet", ["nurse", "pilot", "baker", "chemist", "lawyer", "plumber"]),
    "instrument": ("Which instrument does {p} play?", "I restrung my {v} before the concert", ["cello", "violin", "banjo", "flute", "harp", "mandolin"]),
    "sport": ("Which sport does {p} play?", "I bruised my knee at {v} practice", ["tennis", "rugby", "squash", "hockey", "netball", "rowing"]),
    "food": ("What is {p}'s favourite dish?", "I ordered {v} three times this week", ["paella", "ramen", "goulash", "tacos", "risotto", "falafel"]),
    "car": ("What car does {p} drive?", "the {v} needs new tyres before winter", ["Volvo", "Fiat", "Tesla", "Subaru", "Skoda", "Mazda"]),
    "language": ("Which language is {p} learning?", "my {v} flashcards are all over the desk", ["Finnish", "Korean", "Swahili", "Polish", "Hindi", "Greek"]),
    "author": ("Which author does {p} read?", "I fell asleep over my {v} novel again", ["Tolstoy", "Austen", "Murakami", "Borges", "Orwell", "Woolf"]),
    "colour": ("What colour is {p}'s bike?", "I painted the frame {v} last spring", ["teal", "crimson", "ochre", "violet", "amber", "olive"]),
}
FILLER = [
    "The weather was lovely today.", "I watched a documentary about whales.", "My coffee went cold again this morning.",
    "The train was late by ten minutes.", "I cleaned the kitchen on Sunday.", "We might visit my aunt next month.",
    "The neighbours are renovating again.", "I finally fixed the leaking tap.",
]
TRAIN_PEOPLE = ["Ava", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena"]
EVAL_PEOPLE = ["Mira", "Noor", "Otto", "Pia", "Quin", "Rosa", "Sami", "Tess"]


def make_rows(people: list[str], n: int, seed: int, tag: str) -> list[dict]:
    rng = random.Random(f"{seed}-{tag}")
    rows = []
    for i in range(n):
        p, asked = rng.choice(people), rng.choice(sorted(TOPICS))
        values = {t: rng.choice(v) for t, (_, _, v) in TOPICS.items()}
        facts = {t: TOPICS[t][1].format(v=values[t]) for t in TOPICS}
        lines = [(p, facts[t]) for t in TOPICS]
        lines += [(p, f"People keep asking about my {t}.") for t in rng.sample(sorted(TOPICS), 4)]
        lines += [(p, f) for f in rng.sample(FILLER, 8)]
        others = [o for o in TRAIN_PEOPLE + EVAL_PEOPLE if o != p]
        lines += [("note", f"{rng.choice(others)} mentioned a {rng.choice(sorted(TOPICS))} at dinner.") for _ in range(4)]
        rng.shuffle(lines)
        turns = [{"speaker": s, "text": t, "has_answer": (s, t) == (p, facts[asked])} for s, t in lines]
        rows.append({"id": f"{tag}-{i}", "question": TOPICS[asked][0].format(p=p), "answers": [values[asked]],
                     "question_type": asked, "sessions": [{"id": f"{tag}{i}", "date": f"{tag}-{i}", "turns": turns}]})
    return rows


def shuffled(rows: list[dict], seed: int) -> list[dict]:
    """The control: every row keeps its bank and gold but gets another row's question."""
    questions = [r["question"] for r in rows]
    random.Random(seed).shuffle(questions)
    return [{**r, "question": q} for r, q in zip(rows, questions)]


class CitingStandIn:
    """The answering LLM's stand-in: finds the row by the date shown with its memories, cites the shown memory
    holding the row's gold value, else ``[NO_CITE]``."""

    LINE = re.compile(r"^\[(\d+)\] \(([^)]*)\) (.*)$", re.M)

    def __init__(self, tokenizer, rows: list[dict]):
        self.tokenizer = tokenizer
        self.gold = {r["sessions"][0]["date"]: r["answers"][0] for r in rows}

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        out = []
        for prompt in prompts:
            lines = self.LINE.findall(self.tokenizer.decode(prompt))
            value = self.gold.get(lines[0][1]) if lines else None
            hits = [n for n, _, text in lines if value and value in text and not text.startswith("note:")]
            reply = f"\\boxed{{{value}}} [{hits[0]}]" if hits else "\\boxed{unknown} [NO_CITE]"
            out.append(self.tokenizer(reply, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id])
        return out


def hits(agent, rows, llm, key="recall@m") -> list[float]:
    """Per-question recall with deterministic top-M (the agent's eval selection)."""
    agent.training = False
    return [t.scores[key] for t in agent.rollout(agent.episodes(rows), llm)]


def paired(before: list[float], after: list[float]) -> str:
    """mean(after) - mean(before) with the standard error of the paired difference."""
    d = [a - b for a, b in zip(after, before)]
    mean = sum(d) / len(d)
    se = (sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) ** 0.5
    return f"{mean:+.3f} ± {se:.3f}"


def train(agent, rows, llm, steps: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(steps):
        agent.training = True
        agent.learn(agent.rollout(agent.episodes(rng.sample(rows, 4)), llm))
    agent.reranker.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps of 4 questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--online", type=int, default=240, help="questions in the online stream")
    args = parser.parse_args()

    from memfactory_cli.agents.rmm import RMMAgent, RMMConfig
    from memfactory_cli.models.aliases import tiny_qwen3_bpe
    from memfactory_cli.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_qwen3_bpe()))

    def agent(**options):
        return RMMAgent(tokenizer, {"retriever": {"name": "embedding"}}, "linear", RMMConfig(memory="turn", seed=args.seed, **options))

    rows, held_out = make_rows(TRAIN_PEOPLE, 200, args.seed, "train"), make_rows(EVAL_PEOPLE, 64, args.seed, "eval")
    stream = make_rows(EVAL_PEOPLE, args.online, args.seed, "stream")
    llm = CitingStandIn(tokenizer, rows + held_out + stream)
    start = time.perf_counter()
    trained, control = agent(), agent()
    mean = lambda x: sum(x) / len(x)  # noqa: E731
    before = hits(trained, held_out, llm)
    recall_k = mean(hits(trained, held_out, llm, "recall@k"))
    train(trained, rows, llm, args.steps, args.seed)
    train(control, shuffled(rows, args.seed), llm, args.steps, args.seed)
    after, control_after = hits(trained, held_out, llm), hits(control, held_out, llm)

    lines = []
    for selection in ("gumbel", "top_m"):
        online = agent(online=True, online_selection=selection)
        served = [t.scores["recall@m"] for t in online.rollout(online.episodes(stream), llm)]
        online.online = False
        online_after = hits(online, held_out, llm)
        half, q = len(served) // 2, len(served) // 4
        quarters = [mean(served[i * q : (i + 1) * q]) for i in range(4)]
        lines.append(f"online {selection:6s} (fresh reranker, {len(served)} questions): served recall@5 by quarter "
                     + " ".join(f"{x:.3f}" for x in quarters)
                     + f"; then top-M on held-out {mean(online_after):.3f} (paired delta {paired(before, online_after)})")
        if selection == "gumbel":
            first, second = mean(served[:half]), mean(served[half:])
        else:
            first_m, second_m = mean(served[:half]), mean(served[half:])
    print(f"held-out n={len(held_out)}  K=20 M=5 tau=0.5 lr=1e-3 batch 4  steps={args.steps}  seed={args.seed}  "
          f"recall@K={recall_k:.3f}  {time.perf_counter() - start:.0f} s")
    print(f"trained:  recall@5 {mean(before):.3f} -> {mean(after):.3f}   paired delta {paired(before, after)}")
    print(f"shuffled: recall@5 {mean(before):.3f} -> {mean(control_after):.3f}   paired delta {paired(before, control_after)}"
          "   (queries swapped between rows in training)")
    print("\n".join(lines))
    print(f"recall_before={mean(before):.3f} trained_after={mean(after):.3f} shuffled_after={mean(control_after):.3f} "
          f"online_first_half={first:.3f} online_second_half={second:.3f} "
          f"online_top_m_first_half={first_m:.3f} online_top_m_second_half={second_m:.3f}")


if __name__ == "__main__":
    main()
