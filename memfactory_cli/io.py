"""Atomic writes: results and checkpoints are either complete or absent, never half-written; and JSON lines,
appended whole and read back with a torn last line told apart from a corrupt file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from memfactory_cli.errors import UserError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling file path to write (by any library); on success it replaces ``path`` in one
    rename, on failure it is removed and ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append ``rows`` as JSON lines in one write, flushed to disk: a crash tears at most the last line."""
    payload = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    if not payload:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path, torn_tail: Literal["drop", "error"] = "error") -> list[Any]:
    """The JSON value of every non-empty line; a bad line is one clear error naming it.

    ``torn_tail="drop"`` ignores a last line that lacks its newline and does not parse: what a killed writer of
    :func:`append_jsonl` leaves behind. ``"error"`` treats it as any other bad line (files written by people).
    """
    lines = read_text_file(path, "JSON lines file").split("\n")
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if torn_tail == "drop" and lineno == len(lines):  # the text after the last newline
                break
            raise UserError(f"{path}: line {lineno}: invalid JSON: {exc.msg}") from None
    return rows


def cut_torn_tail(path: Path) -> None:
    """Cut whatever follows the last newline (a torn append), so the next append starts a line of its own."""
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        with open(path, "r+b") as f:
            f.truncate(complete)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Rename the finished folder ``src`` to ``dst``, replacing an older ``dst`` (moved aside, then deleted)."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it is writable, with one clear error otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"output directory {path} is not writable: {exc.strerror or exc}") from None
    return path


def read_text_file(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of a user-named file, or one clear error saying which ``what`` is missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{p}: not a UTF-8 text file") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read: {exc.strerror or exc}") from None
