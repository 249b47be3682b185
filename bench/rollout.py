"""Rollout speed: batched MemAgent rollout vs a MemFactory-style loop, and vs its own generate calls.

Shapes (issue: core): tiny Qwen3 (hidden 64, 2 layers, small BPE vocabulary), 8 questions x G=4, 256-token chunks,
32-token memories, documents of 2-4 chunks with questions of varying length, so prompts are left-padded.

- ratio      = time(MemFactory-style: one plain ``model.generate`` call per question x G per turn, as MemFactory does)
               / time(batched: one call per turn across all questions x G, through HFGenerator's shared prefill)
- efficiency = time(batched rollout) / time(the same HFGenerator calls on the recorded prompts, nothing else)
  i.e. what the loop's own bookkeeping (prompt assembly, memory parsing, decoding) costs on top of generation.

Also printed, for transparency: the MemFactory-style loop given our generator too, and bare ``model.generate`` on
the batched shapes (what the shared prefill saves). Greedy decoding, so every variant generates the same tokens.
Last line: ``ratio=X efficiency=Y``.
"""

from __future__ import annotations

import random

import _common  # noqa: F401  (sets the offline environment)
import torch

from memfactory_cli.agents.memagent import MemAgent
from memfactory_cli.data import synth
from memfactory_cli.data.sources import normalise_row
from memfactory_cli.generation.base import HFGenerator, SamplingParams

QUESTIONS, G, CHUNK, MEMORY = 8, 4, 256, 32


def episodes(agent: MemAgent) -> list:
    rng = random.Random(0)
    rows = []
    for i in range(QUESTIONS):
        cfg = synth.SynthConfig(n_eval=1, people=rng.randint(3, 6), filler_sentences=rng.randint(25, 55))
        item = synth.to_eval_schema(synth.generate(cfg, "eval", seed=i)[0])
        item["input"] = item["input"] + " Answer briefly." * rng.randint(0, 3)
        rows.append(normalise_row(item, "bench", i))
    return agent.episodes(rows)


class Recorder:
    def __init__(self, inner: HFGenerator):
        self.inner, self.calls = inner, []

    def generate(self, prompts, max_new_tokens):
        self.calls.append((prompts, max_new_tokens))
        return self.inner.generate(prompts, max_new_tokens)


def main() -> None:
    from _common import alternate, tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer()
    modules = {"memory": {"name": "recurrent_memory", "chunk_size": CHUNK, "max_memory_tokens": MEMORY, "max_chunks": 4, "max_answer_tokens": 16}}
    agent = MemAgent(tok, modules)
    eps = episodes(agent)
    slots = [e for e in eps for _ in range(G)]
    generator = HFGenerator(model, tok, SamplingParams(do_sample=False))

    recorder = Recorder(generator)
    agent.rollout(slots, recorder)
    chunks = [len(agent.memory.chunks(e.context_ids)) for e in eps]
    widths = [len(p) for prompts, _ in recorder.calls for p in prompts]
    print(f"chunks per document: {chunks}; prompt tokens {min(widths)}-{max(widths)}; generate calls: {len(recorder.calls)}")

    pad = tok.pad_token_id
    bare_inputs = []
    for prompts, budget in recorder.calls:
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        bare_inputs.append((ids, mask, budget))
    eos = generator.eos_ids
    plain = HFGenerator(model, tok, SamplingParams(do_sample=False), shared_prefill=False)

    def bare():
        with torch.no_grad():
            for ids, mask, budget in bare_inputs:
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=budget, do_sample=False, pad_token_id=pad, eos_token_id=eos)

    def generator_calls():
        for prompts, budget in recorder.calls:
            generator.generate(prompts, budget)

    def batched():
        agent.rollout(slots, generator)

    def per_question(gen):
        def loop():
            for q in range(QUESTIONS):
                agent.rollout(slots[q * G : (q + 1) * G], gen)

        return loop

    t = alternate(
        {
            "batched": batched,
            "generator_calls": generator_calls,
            "memfactory_style": per_question(plain),
            "per_question_shared_prefill": per_question(generator),
            "bare_generate": bare,
        },
        repeats=5,
    )
    ratio = t["memfactory_style"] / t["batched"]
    efficiency = t["batched"] / t["generator_calls"]
    print(f"batched rollout                      {t['batched']:.3f} s")
    print(f"  its generate calls alone           {t['generator_calls']:.3f} s   (goal: efficiency <= 1.15)")
    print(f"MemFactory-style (plain generate)    {t['memfactory_style']:.3f} s   (goal: ratio >= 2.5)")
    print(f"  same loop, our generator           {t['per_question_shared_prefill']:.3f} s   "
          f"(ratio {t['per_question_shared_prefill'] / t['batched']:.2f}: batching across questions alone)")
    print(f"bare model.generate, batched shapes  {t['bare_generate']:.3f} s   "
          f"(shared prefill saves {t['bare_generate'] / t['generator_calls']:.2f}x)")
    print(f"ratio={ratio:.2f} efficiency={efficiency:.3f}")


if __name__ == "__main__":
    main()
