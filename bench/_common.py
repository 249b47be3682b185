"""Shared bench helpers: offline env, timing by alternating repeats, a tiny model."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def alternate(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, run in alternation so machine noise hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def tiny_model_and_tokenizer():
    import torch

    from memfactory_cli.config.schema import ModelConfig
    from memfactory_cli.models.aliases import tiny_qwen3_bpe
    from memfactory_cli.models.loading import load_model, load_tokenizer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    path = str(tiny_qwen3_bpe())
    return load_model(ModelConfig(name_or_path=path), "cpu").eval(), load_tokenizer(path)
