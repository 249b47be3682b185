"""``memfactory data``: write the synthetic set to files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memfactory_cli.config.loader import build_dataclass
from memfactory_cli.data import synth
from memfactory_cli.io import atomic_write_text, ensure_writable_dir


def synth_to_files(out: str, seed: int, options: dict[str, Any]) -> dict[str, Path]:
    """Write ``train.json`` (MemAgent training schema) and ``eval.json`` (MemAgent eval schema) under ``out``."""
    cfg = build_dataclass(synth.SynthConfig, options, "data.synth")
    folder = ensure_writable_dir(Path(out))
    paths = {"train": folder / "train.json", "eval": folder / "eval.json"}
    atomic_write_text(paths["train"], json.dumps(synth.generate(cfg, "train", seed), indent=1))
    eval_rows = [synth.to_eval_schema(x) for x in synth.generate(cfg, "eval", seed)]
    atomic_write_text(paths["eval"], json.dumps(eval_rows, indent=1))
    return paths
