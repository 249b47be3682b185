"""Where episodes come from: registered datasets, local files, or hub ids, all normalised to one row schema.

Canonical row (what environments consume): ``{"id", "question", "context", "answers": [str, ...]}``, plus
``answer_prefix`` for RULER items. Accepted inputs:

- MemAgent training parquet/JSON: ``prompt`` (chat list or str), ``context``, ``reward_model.ground_truth``;
- MemAgent eval JSON: ``context``, ``input``, ``answers``;
- RULER: ``context``, ``input``, ``outputs``, ``answer_prefix``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data import synth
from memfactory_cli.errors import UserError
from memfactory_cli.registry import register, registry

FILE_SUFFIXES = (".json", ".jsonl", ".parquet")


@register("dataset", "synth_train")
def synth_train(cfg: DataConfig) -> list[dict[str, Any]]:
    """Seeded synthetic training questions (MemAgent training schema)."""
    return synth.generate(synth.SynthConfig.from_dict(cfg.synth), "train", cfg.seed)


@register("dataset", "synth_eval")
def synth_eval(cfg: DataConfig) -> list[dict[str, Any]]:
    """Held-out synthetic questions with unseen names (MemAgent eval schema)."""
    return [synth.to_eval_schema(x) for x in synth.generate(synth.SynthConfig.from_dict(cfg.synth), "eval", cfg.seed)]


def _as_answers(value: Any, where: str) -> list[str]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (str, int, float)):
        return [str(value)]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    raise UserError(f"{where}: the reference answers must be a string or a non-empty list of strings")


def normalise_row(row: dict[str, Any], where: str, index: int) -> dict[str, Any]:
    """One input row (any accepted schema) -> the canonical episode row."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object, got {type(row).__name__}")
    if "context" not in row:
        raise UserError(f"{where}: missing field 'context'")
    context = row["context"]
    if not isinstance(context, str):
        raise UserError(f"{where}: field 'context' must be text (document-index contexts are not supported)")
    if "input" in row:
        question = row["input"]
    elif "prompt" in row:
        prompt = row["prompt"]
        if hasattr(prompt, "tolist"):
            prompt = prompt.tolist()
        question = prompt[0]["content"] if isinstance(prompt, list) and prompt else prompt
    else:
        raise UserError(f"{where}: missing field 'input' (eval/RULER schema) or 'prompt' (training schema)")
    if not isinstance(question, str) or not question.strip():
        raise UserError(f"{where}: the question must be non-empty text")
    if "answers" in row:
        answers = _as_answers(row["answers"], where)
    elif "outputs" in row:
        answers = _as_answers(row["outputs"], where)
    elif isinstance(row.get("reward_model"), dict) and "ground_truth" in row["reward_model"]:
        answers = _as_answers(row["reward_model"]["ground_truth"], where)
    else:
        raise UserError(f"{where}: missing field 'answers', 'outputs' or 'reward_model.ground_truth'")
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    out = {
        "id": str(row.get("index", extra.get("index", index))),
        "question": question,
        "context": context,
        "answers": answers,
    }
    if "answer_prefix" in row:
        out["answer_prefix"] = str(row["answer_prefix"])
    return out


def _read_file(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # pyarrow raises its own types for corrupt files
        raise UserError(f"{path}: not a readable parquet file: {str(exc).splitlines()[0]}") from None
    if not text.strip():
        raise UserError(f"{path}: the file is empty")
    if path.suffix == ".jsonl" or (path.suffix == ".json" and not text.lstrip().startswith("[")):
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}: line {lineno}: invalid JSON: {exc.msg}") from None
        return rows
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a JSON list of rows")
    return rows


def _read_hub(dataset_id: str) -> list[dict[str, Any]]:
    offline = os.environ.get("HF_DATASETS_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0")).lower() in ("1", "true")
    hint = (
        f"download it on a connected machine (`hf download --repo-type dataset {dataset_id}`) and point the "
        "recipe at the local .json/.parquet file, e.g. under data/"
    )
    if offline:
        raise UserError(f"dataset '{dataset_id}' is a hub id but the hub is offline; {hint}")
    try:
        from datasets import load_dataset

        ds = load_dataset(dataset_id, split="train")
    except Exception as exc:
        raise UserError(f"cannot load hub dataset '{dataset_id}': {str(exc).splitlines()[0]}; {hint}") from None
    return list(ds)


def load_rows(spec: str, cfg: DataConfig, limit: int | None = None) -> list[dict[str, Any]]:
    """Resolve ``spec`` (registered name, file, or hub id) to canonical rows."""
    if not spec:
        raise UserError("no dataset given")
    path = Path(spec).expanduser()
    if spec in registry("dataset") or ":" in spec:
        raw, where = registry("dataset").get(spec)(cfg), spec
    elif path.suffix in FILE_SUFFIXES or path.exists():
        if not path.is_file():
            raise UserError(f"data file not found: {path}")
        raw, where = _read_file(path), str(path)
    elif spec.count("/") == 1 and not spec.startswith("."):
        raw, where = _read_hub(spec), spec
    else:
        raise UserError(
            f"dataset '{spec}' is not a registered name ({', '.join(registry('dataset').names())}), "
            "a .json/.jsonl/.parquet file, or a hub id"
        )
    if limit is not None:
        raw = raw[:limit]
    rows = [normalise_row(r, f"{where}: row {i}", i) for i, r in enumerate(raw)]
    if not rows:
        raise UserError(f"{where}: no rows")
    return rows
