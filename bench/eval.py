"""Eval throughput: the batched avg@k eval (every question x k sample turn by turn together) vs a per-question loop.

Shapes: tiny Qwen3 (hidden 64, 2 layers, 2k BPE vocabulary), 8 synthetic questions of 2-3 chunks x k=4, 96-token
chunks, 24-token memories, 8-token answers, sampling at T=1.0 as avg@k does.

- batched: ``evaluate_rows(..., k=4, batch_questions=8)``: one generate call per turn for all 32 trajectories.
- loop:    ``evaluate_rows`` on one question at a time (its 4 samples still batched together): what an eval script
  that walks the questions does. MemFactory's ``evaluate_worker.py`` is slower still (one trajectory at a time).

ratio = time(loop) / time(batched) = the batched eval's throughput gain. Last line: ``ratio=X``.
"""

from __future__ import annotations

import random

import _common  # noqa: F401  (sets the offline environment)
import torch

from memfactory_cli.agents.memagent import MemAgent
from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data import synth
from memfactory_cli.data.sources import normalise_row
from memfactory_cli.envs.longcontext import LongcontextEnv
from memfactory_cli.generation.base import HFGenerator, SamplingParams
from memfactory_cli.workflows.evaluate import evaluate_rows

QUESTIONS, K, CHUNK, MEMORY = 8, 4, 96, 24


def rows() -> list[dict]:
    rng = random.Random(0)
    out = []
    for i in range(QUESTIONS):
        cfg = synth.SynthConfig(n_eval=1, people=rng.randint(3, 6), filler_sentences=rng.randint(8, 20))
        out.append(normalise_row(synth.to_eval_schema(synth.generate(cfg, "eval", seed=i)[0]), "bench", i))
    return out


def main() -> None:
    from _common import alternate, tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer()
    modules = {"memory": {"name": "recurrent_memory", "chunk_size": CHUNK, "max_memory_tokens": MEMORY, "max_chunks": 3, "max_answer_tokens": 8}}
    agent = MemAgent(tok, modules)
    env = LongcontextEnv(DataConfig())
    data = rows()
    generator = HFGenerator(model, tok, SamplingParams(do_sample=True, temperature=1.0, top_p=1.0), max_batch=64)
    chunks = [len(agent.memory.chunks(e.context_ids)) for e in agent.episodes(data)]
    print(f"{QUESTIONS} questions x k={K}; chunks per document: {chunks}")

    def batched():
        torch.manual_seed(0)
        result = evaluate_rows(agent, env, data, generator, k=K, batch_questions=QUESTIONS)
        assert len(result["records"]) == QUESTIONS * K

    def loop():
        torch.manual_seed(0)
        for row in data:
            evaluate_rows(agent, env, [row], generator, k=K)

    t = alternate({"batched": batched, "loop": loop}, repeats=3)
    ratio = t["loop"] / t["batched"]
    print(f"batched eval        {t['batched']:.3f} s  ({QUESTIONS * K / t['batched']:.1f} trajectories/s)")
    print(f"per-question loop   {t['loop']:.3f} s  ({QUESTIONS * K / t['loop']:.1f} trajectories/s)")
    print(f"ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
