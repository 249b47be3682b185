"""An on-disk verdict cache shared by every process of a run (and by later runs).

SQLite in WAL mode: readers never block, writers take a short lock and wait for each other (``busy_timeout``), and
a crashed writer leaves no half-written entry. Only verdicts are stored, never failures, so an outage is retried
by the next run instead of being remembered. WAL needs a local filesystem (not NFS).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

_SCHEMA = "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict INTEGER NOT NULL, reply TEXT)"
_CHUNK = 500


def cache_key(judge: str, template: str, question: str, references: list[str], prediction: str) -> str:
    """sha256 over an unambiguous encoding of everything the verdict depends on."""
    payload = json.dumps([judge, template, question, list(references), prediction], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _setup(conn: sqlite3.Connection, patience_s: float = 60.0) -> None:
    """Switch to WAL and create the table, retrying while another process does the same.

    Changing the journal mode returns "database is locked" at once, without waiting on the busy timeout, when two
    processes open a new cache together; so the wait is done here.
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class VerdictCache:
    """``get_many`` / ``put_many`` over one SQLite file; the connection is reopened after a fork."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
            _setup(conn)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get_many(self, keys: list[str]) -> dict[str, bool]:
        found: dict[str, bool] = {}
        with self._lock:
            conn = self._connection()
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, verdict in conn.execute(f"SELECT key, verdict FROM verdicts WHERE key IN ({marks})", chunk):
                    found[key] = bool(verdict)
        return found

    def put_many(self, entries: list[tuple[str, bool, str]]) -> None:
        """``(key, verdict, judge reply)`` rows, in one transaction."""
        if not entries:
            return
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO verdicts (key, verdict, reply) VALUES (?, ?, ?)",
                    [(k, int(v), reply) for k, v, reply in entries],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._connection().execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
