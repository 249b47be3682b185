"""``memfactory list``: every registry family and its members."""

from __future__ import annotations

import inspect

from memfactory_cli.registry import FAMILIES, registry


def families() -> dict[str, list[tuple[str, str]]]:
    out = {}
    for family in FAMILIES:
        reg = registry(family)
        out[family] = [(name, (inspect.getdoc(reg.get(name)) or "").splitlines()[0] if inspect.getdoc(reg.get(name)) else "") for name in reg.names()]
    return out
