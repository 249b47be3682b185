"""An on-disk cache of built artefacts (converted or generated models), filled atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("MEMFACTORY_CACHE", Path.home() / ".cache" / "memfactory"))


def cached_dir(name: str, build: Callable[[Path], None]) -> Path:
    """Return ``<cache>/<name>``, building it first with ``build(tmp_dir)`` if absent.

    The build writes into a temporary sibling that is renamed into place, so a crash or a concurrent build never
    leaves a half-written folder behind.
    """
    target = cache_root() / name
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(tmp)
        (tmp / ".complete").touch()
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
