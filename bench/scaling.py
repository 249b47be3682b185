"""Rollout time against document length: MemAgent (linear by design) and a full-context baseline on the same model.

Tiny Qwen3 (hidden 64, 2 layers, BPE vocabulary), 2 questions x G=2 trajectories, greedy. Documents of exactly
8, 16, 32 and 64 chunks of 64 tokens (512 to 4,096 tokens), cut from one long synthetic text. MemAgent: one batched
update turn per chunk (16-token memory), then the answer (16 tokens). Full context: one ``generate`` over the
question and the whole document (the same answer prompt with the document as its memory), 16 tokens.

Time per length is the median of alternated repeats; the exponent is the least-squares slope of log(time) against
log(chunks). MemAgent's prompt per turn is bounded (chunk + memory + template), so its time should grow linearly
(exponent ~1); the full-context prompt grows with the document, and attention over it grows faster.
Last line: ``exponent=X`` (MemAgent; goal <= 1.05), with the baseline's exponent on the line before.
"""

from __future__ import annotations

import math

import _common  # noqa: F401  (sets the offline environment)

from memfactory_cli.agents.base import Episode
from memfactory_cli.agents.memagent import MemAgent
from memfactory_cli.data import synth
from memfactory_cli.generation.base import HFGenerator, SamplingParams

LENGTHS, CHUNK, MEMORY, ANSWER, QUESTIONS, G = (8, 16, 32, 64), 64, 16, 16, 2, 2


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    import torch
    from _common import alternate, tiny_model_and_tokenizer

    torch.set_num_threads(1)  # a shared 2-core machine: two spinning threads per process ran ~30x slower
    model, tok = tiny_model_and_tokenizer()
    memory = {"name": "recurrent_memory", "chunk_size": CHUNK, "max_memory_tokens": MEMORY, "max_chunks": max(LENGTHS), "max_answer_tokens": ANSWER}
    agent = MemAgent(tok, {"memory": memory})
    items = synth.generate(synth.SynthConfig(n_eval=40, filler_sentences=40), "eval", seed=0)
    text_ids = agent.memory.encode(" ".join(item["context"] for item in items))
    assert len(text_ids) >= max(LENGTHS) * CHUNK, len(text_ids)
    questions = [agent.memory.encode(item["extra_info"]["question"]) for item in items[:QUESTIONS]]
    generator = HFGenerator(model, tok, SamplingParams(do_sample=False))

    def episodes(chunks: int) -> list[Episode]:
        ids = text_ids[: chunks * CHUNK]
        return [Episode({"id": str(q)}, questions[q], ids) for q in range(QUESTIONS) for _ in range(G)]

    runs = {}
    for n in LENGTHS:
        eps = episodes(n)
        assert all(len(agent.memory.chunks(e.context_ids)) == n for e in eps)
        full_prompts = [agent.memory.final_prompt(e.question_ids, e.context_ids) for e in eps]
        runs[f"memagent@{n}"] = lambda eps=eps: agent.rollout(eps, generator)
        runs[f"full@{n}"] = lambda prompts=full_prompts: generator.generate(prompts, ANSWER)
    times = alternate(runs, repeats=3, warmup=1)

    print(f"{'chunks':>6}  {'doc tokens':>10}  {'memagent s':>10}  {'full-context s':>14}")
    for n in LENGTHS:
        print(f"{n:>6}  {n * CHUNK:>10}  {times[f'memagent@{n}']:>10.3f}  {times[f'full@{n}']:>14.3f}")
    mem = slope(list(LENGTHS), [times[f"memagent@{n}"] for n in LENGTHS])
    full = slope(list(LENGTHS), [times[f"full@{n}"] for n in LENGTHS])
    print("goal: MemAgent exponent <= 1.05 (linear in document length)")
    print(f"baseline_exponent={full:.3f}")
    print(f"exponent={mem:.3f}")


if __name__ == "__main__":
    main()
