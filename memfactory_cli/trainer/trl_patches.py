"""The two process-wide changes ``MemGRPOTrainer`` makes to TRL, each with its reason. Both touch module attributes
of ``trl.trainer.utils`` that TRL reads at call time; ``tests/test_trl_surface.py`` fails clearly when an upgrade
removes one.

- ``score_only_completion_positions``: TRL's fused LM head projects only the completion positions, but only on
  Triton devices; on CPU it projects every prompt position too, and MemAgent rows are mostly prompt.
- ``lean_cpu_logprob_tiles``: on devices without Triton, TRL's torch fallback makes about four fp32 temporaries the
  size of a 32,768-wide vocabulary tile; 4,096-wide tiles bound that peak.
"""

from __future__ import annotations

from typing import Any

CPU_VOCAB_TILE = 4096


def score_only_completion_positions() -> None:
    """Make TRL's fused LM head project only completion positions on CPU too.

    TRL compacts to the labelled positions only on Triton devices (elsewhere it keeps tile shapes fixed to avoid
    recompilation, which matters on Neuron, not on CPU) and projects every prompt position through the LM head.
    MemAgent rows are mostly prompt (chunk + memory), so on CPU this wasted most of the update time: see
    ``bench/logprobs.py``. Only the compaction switch ``trl.trainer.utils._use_triton`` is changed, not the kernels.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None or getattr(original, "_memfactory", False):
        return

    def compact(device: Any) -> bool:
        return device.type == "cpu" or original(device)

    compact._memfactory = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact


def lean_cpu_logprob_tiles(device: Any) -> None:
    """On devices without Triton, fold the LM head through 4,096-wide vocabulary tiles instead of TRL's 32,768.

    Triton devices fold each tile in place. TRL's torch fallback (CPU) makes about four fp32 temporaries the size of
    a tile (tokens x vocabulary width), so with a thousand completion tokens it peaked above the naive full-logits
    computation (``bench/logprobs.py``: 1.33x its peak with a backward pass, 0.37x with this). Only the width
    constant ``trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE``, which TRL reads at call time, changes.
    """
    if device.type in ("cuda", "xpu"):
        return
    import trl.trainer.utils as trl_utils

    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = min(trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE, CPU_VOCAB_TILE)
