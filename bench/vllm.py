"""vLLM against HF generation: the same greedy MemAgent rollouts through ``generation.backend`` vllm and hf.

Shapes: the demo's recipe (``recipes/memagent_smollm2_cpu.yaml``): SmolLM2-135M-Instruct in fp32, its chunking,
memory and answer budgets and one-shot prompts, over its first 32 held-out questions (synthetic, two people). The
same agent, episodes and budgets go to ``eval_generator`` over the HF model (``HFGenerator``: batched, shared
prefill) and over a vLLM engine of the same folder and dtype (``VLLMGenerator``). Both are timed in alternation,
engine start-up excluded (printed apart); the share of turns whose ids agree exactly is printed too.

Last line: ``ratio=X`` = HF seconds / vLLM seconds per rollout of all questions (goal >= 3).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (sets the offline environment)

# This script is named like the package it measures: drop its folder from the path, and leave it as the working
# directory (vLLM inspects models in a `python -m` subprocess, which puts the working directory on its path), so
# `import vllm` finds vLLM.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
os.chdir(HERE.parent)

from memfactory_cli.config import load_recipe  # noqa: E402
from memfactory_cli.workflows.common import build_env, eval_generator, inference_model, load_policy  # noqa: E402

RECIPE = HERE.parent / "recipes" / "memagent_smollm2_cpu.yaml"
QUESTIONS = 32


def main() -> None:
    from _common import alternate  # already imported above, before the path change

    cfg = load_recipe(str(RECIPE), ["data.synth.n_eval=64"])
    policy = load_policy(cfg)
    episodes = policy.agent.episodes(build_env(cfg).rows("eval")[:QUESTIONS])
    hf = eval_generator(policy.load(), policy.tokenizer, cfg.eval)
    cfg.generation.backend = "vllm"
    start = time.perf_counter()
    engine = eval_generator(inference_model(cfg, policy), policy.tokenizer, cfg.eval)
    print(f"vLLM engine start-up: {time.perf_counter() - start:.1f} s (threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")

    def turns(generator):
        return [(t.prompt_ids, t.completion_ids) for tr in policy.agent.rollout(episodes, generator) for t in tr.turns]

    a, b = turns(hf), turns(engine)
    same = sum(x == y for x, y in zip(a, b))
    print(f"{QUESTIONS} questions, {len(a)} turns; turns with identical prompt and completion ids: {same}/{len(a)}")
    seconds = alternate({"hf": lambda: turns(hf), "vllm": lambda: turns(engine)}, repeats=3, warmup=0)
    print(f"hf {seconds['hf']:.2f} s, vllm {seconds['vllm']:.2f} s per rollout (median of 3)")
    print(f"ratio={seconds['hf'] / seconds['vllm']:.2f}")


if __name__ == "__main__":
    main()
