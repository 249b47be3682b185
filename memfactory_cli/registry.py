"""The one registry mechanism, shared by every family of named things.

Families: ``extractor``, ``updater``, ``retriever``, ``recurrent_memory`` (modules), ``agent``, ``env``,
``reward``, ``dataset``, ``model``. Code registers itself next to its definition with ``@register(family, name)``;
recipes name things by registered name or, as an escape hatch, by dotted path ``pkg.module:Attr``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from memfactory_cli.errors import UserError, did_you_mean

FAMILIES = ("recurrent_memory", "extractor", "updater", "retriever", "agent", "env", "reward", "dataset", "model")

# Importing these modules runs their @register decorators.
_BUILTIN_MODULES = (
    "memfactory_cli.models.aliases",
    "memfactory_cli.data.sources",
    "memfactory_cli.data.locomo",
    "memfactory_cli.data.dialogues",
    "memfactory_cli.modules.recurrent_memory",
    "memfactory_cli.modules.retriever",
    "memfactory_cli.modules.extractor",
    "memfactory_cli.modules.updater",
    "memfactory_cli.envs.longcontext",
    "memfactory_cli.envs.memory_bank",
    "memfactory_cli.envs.dialogue",
    "memfactory_cli.rewards.qa",
    "memfactory_cli.rewards.format",
    "memfactory_cli.rewards.memory_r1",
    "memfactory_cli.rewards.judge.reward",
    "memfactory_cli.agents.memagent",
    "memfactory_cli.agents.memory_r1",
    "memfactory_cli.agents.rmm",
    "memfactory_cli.rewards.rmm",
)


class Registry:
    """A name -> object map for one family, with did-you-mean misses and a dotted-path escape hatch."""

    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.family} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> Any:
        load_builtins()
        if name in self._entries:
            return self._entries[name]
        if ":" in name:
            return _import_dotted(name, self.family)
        known = ", ".join(sorted(self._entries)) or "none"
        raise UserError(
            f"unknown {self.family} '{name}'{did_you_mean(name, self._entries)}; known: {known}; "
            f"or give a dotted path 'package.module:Name'"
        )

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        load_builtins()
        return name in self._entries


REGISTRIES: dict[str, Registry] = {family: Registry(family) for family in FAMILIES}


def registry(family: str) -> Registry:
    return REGISTRIES[family]


def register(family: str, name: str) -> Callable[[Any], Any]:
    """Decorator: ``@register("reward", "f1")``."""
    return REGISTRIES[family].register(name)


_loaded = False


def load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def _import_dotted(path: str, family: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import {family} '{path}': {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UserError(f"cannot import {family} '{path}': module '{module_name}' has no attribute '{attr}'") from None
