"""One-GPU smoke run at the paper's sequence shapes, no hub: train 2 steps per backend, eval, serve, memory plan.

``bench/gpu_smoke.sh`` runs this. A random Qwen3 (hidden 512, 4 layers, the real Qwen3 tokenizer) is built into a
local folder; the 1.7B MemAgent recipe runs on it with only the model, the data (synthetic documents long enough
for all 6 chunks of 2,500 tokens), the step and batch counts overridden, so every turn has the recipe's shapes:
2.5k-token chunks, 1,024-token memories, ~4.7k-token rows. For each backend (``hf``; ``vllm`` colocate with sleep
mode when vllm imports) it trains 2 steps and prints, per phase, the planner's estimate (``memfactory check``'s
plan for this GPU) beside ``torch.cuda.max_memory_allocated()`` measured over that phase. Then ``memfactory eval``
on 4 questions and one request through ``memfactory serve``'s app over HTTP.

``--dry-run`` runs the same entry points on CPU with small shapes (chunk 48, memory 8; no vLLM, no CUDA memory
figures) in about a minute: ``tests/test_gpu_smoke.py`` runs it so this script is not untested code. Nothing here
has run on a GPU yet (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _common  # noqa: E402,F401  (offline env)

RECIPE = str(ROOT / "recipes" / "memagent_qwen3_1.7b.yaml")


def build_model(folder: Path, hidden: int, layers: int) -> str:
    """A random Qwen3 with the real tokenizer, saved as a local model folder (no hub)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from memfactory_cli.models.aliases import tiny_qwen3_bpe

    tokenizer_dir = Path(tiny_qwen3_bpe())
    config = Qwen3Config.from_pretrained(tokenizer_dir)
    config.update(
        dict(hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers, num_attention_heads=8,
             num_key_value_heads=4, head_dim=hidden // 8, max_position_embeddings=32768)
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    for f in tokenizer_dir.iterdir():
        if f.is_file() and not f.name.startswith(("model", "config")) and f.suffix != ".safetensors":
            shutil.copy(f, folder / f.name)
    return str(folder)


def overrides(model: str, out: Path, dry_run: bool, backend: str) -> list[str]:
    shapes = (
        ["agent.modules.memory.chunk_size=48", "agent.modules.memory.max_memory_tokens=8", "agent.modules.memory.max_answer_tokens=8",
         "agent.modules.memory.max_chunks=3", "agent.modules.memory.template=compact", "data.synth.filler_sentences=6"]
        if dry_run
        else ["data.synth.filler_sentences=1400"]  # ~15k-token documents: all 6 chunks of 2,500 tokens
    )
    device = ["trainer.device=cpu", "trainer.bf16=false"] if dry_run else []
    vllm = ["generation.vllm_gpu_memory_utilization=0.25", "generation.vllm_enable_sleep_mode=true"] if backend == "vllm" else []
    return [
        f"model.name_or_path={model}", "data.train=synth_train", "data.eval=synth_eval", "data.synth.n_train=16",
        "data.synth.n_eval=4", "trainer.max_steps=2", "trainer.questions_per_step=2", "trainer.num_generations=2",
        "trainer.gradient_accumulation_steps=2", "trainer.save_steps=0", "logging.swanlab=disabled", "logging.progress=false",
        f"generation.backend={backend}", f"output.dir={out}", *shapes, *device, *vllm,
    ]


class PhasePeaks:
    """torch.cuda.max_memory_allocated() over each rollout and each update, around the trainer's own methods."""

    def __init__(self, trainer):
        import torch

        self.cuda = torch.cuda.is_available()
        self.peaks = {"rollout": 0, "update": 0}
        for name, phase in (("_generate_and_score_completions", "rollout"), ("training_step", "update")):
            setattr(trainer, name, self._wrap(getattr(trainer, name), phase))

    def _wrap(self, fn, phase):
        import torch

        def measured(*args, **kwargs):
            if self.cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.cuda:
                    torch.cuda.synchronize()
                    self.peaks[phase] = max(self.peaks[phase], torch.cuda.max_memory_allocated())

        return measured


def train_backend(model: str, work: Path, dry_run: bool, backend: str) -> None:
    from memfactory_cli.config import load_recipe
    from memfactory_cli.models.footprint import format_bytes
    from memfactory_cli.workflows import train
    from memfactory_cli.workflows.check import run_checks
    from memfactory_cli.workflows.planner import detected_gpu_memory

    args = overrides(model, work / f"train_{backend}", dry_run, backend)
    cfg = load_recipe(RECIPE, args)
    gpu = detected_gpu_memory()
    # the plan is for the recipe's CUDA device (--dry-run plans it for an 80 GiB GPU while training on CPU)
    planned = load_recipe(RECIPE, [a for a in args if not a.startswith(("trainer.device", "trainer.bf16"))])
    report = run_checks(planned, "train", strict=False, gpu_memory=gpu or 80 * 2**30)
    start = time.perf_counter()
    run = train.build(cfg)
    peaks = PhasePeaks(run.trainer)
    run.trainer.train()
    train.save_final(run)
    print(f"[{backend}] trained 2 steps in {time.perf_counter() - start:.0f} s; rows/step: {report.facts.get('rows per step')}")
    for phase in report.plan.phases if report.plan is not None else []:
        key = "rollout" if phase.name.startswith("rollout") else "update"
        measured = peaks.peaks[key]
        figure = f"measured {format_bytes(measured)}  ratio {phase.total / measured:.2f}" if measured else "measured n/a (no CUDA)"
        print(f"[{backend}] {phase.name}: estimate {format_bytes(phase.total)}  {figure}")
    if report.problems:
        print(f"[{backend}] check problems: {report.problems}")


def eval_and_serve(model: str, work: Path, dry_run: bool) -> None:
    from memfactory_cli.config import load_recipe
    from memfactory_cli.workflows import eval_sets
    from memfactory_cli.workflows.serve import ServerThread, build_service, create_app

    args = overrides(model, work / "eval", dry_run, "hf")
    entries = eval_sets.run(["synth_eval"], RECIPE, args + ["eval.k=1", "eval.greedy=true"], limit=4, out=str(work / "eval"), progress=lambda *a: None)
    print(f"[eval] {json.dumps({e['set']: e.get('metrics', {}) for e in entries}, default=str)[:300]}")
    load_recipe(RECIPE, args)
    service = build_service(RECIPE, args, None, "agent", "smoke")
    import urllib.request

    with ServerThread(create_app(service)) as base:
        body = json.dumps({"model": "smoke", "messages": [{"role": "user", "content": "Ada lives in Oslo. " * 40 + "\n\nWhere does Ada live?"}], "max_tokens": 8})
        request = urllib.request.Request(f"{base}/chat/completions", body.encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as reply:
            answer = json.loads(reply.read())
    print(f"[serve] turns {answer['memfactory']['turns']}, finish {answer['choices'][0]['finish_reason']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, small shapes, no vLLM: the same entry points")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    import importlib.util

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_smoke: no CUDA GPU visible; use --dry-run for the CPU check")
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_smoke-"))
    model = build_model(work / "model", hidden=64 if args.dry_run else 512, layers=2 if args.dry_run else 4)
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)")
    backends = ["hf"] + (["vllm"] if not args.dry_run and importlib.util.find_spec("vllm") else [])
    if "vllm" not in backends:
        print("[vllm] skipped: " + ("--dry-run (CPU)" if args.dry_run else "vllm is not installed"))
    for backend in backends:
        train_backend(model, work, args.dry_run, backend)
    eval_and_serve(model, work, args.dry_run)
    print("gpu_smoke: ok")


if __name__ == "__main__":
    main()
