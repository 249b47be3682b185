"""Reading data files: the ``data/`` folder, row files (.json / .jsonl / .parquet) and whether the hub is offline.

One module for it so that every set (``sources``, ``dialogues``, ``locomo``) reads files the same way, with the same
errors, and none of them imports another for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from memfactory_cli.errors import UserError
from memfactory_cli.io import read_jsonl, read_text_file

DATA_DIR = Path("data")  # relative to the working directory, like the data paths in recipes
FILE_SUFFIXES = (".json", ".jsonl", ".parquet")


def read_rows_file(path: Path) -> list[Any]:
    """The rows of a .parquet, a .jsonl, a JSON list, or a .json file of one object per line; one clear line if not."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except OSError as exc:
            raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except Exception as exc:  # pyarrow raises its own types for corrupt files
            raise UserError(f"{path}: not a readable parquet file: {str(exc).splitlines()[0]}") from None
    text = read_text_file(path, "data file")
    if not text.strip():
        raise UserError(f"{path}: the file is empty")
    if path.suffix == ".jsonl" or (path.suffix == ".json" and not text.lstrip().startswith("[")):
        return read_jsonl(path)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a JSON list of rows")
    return rows


def hub_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted (``HF_DATASETS_OFFLINE``, else ``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_DATASETS_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0")).lower() in ("1", "true")
