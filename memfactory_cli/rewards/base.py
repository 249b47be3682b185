"""Turning recipe reward specs into named batch functions."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from memfactory_cli.config.schema import RewardSpec
from memfactory_cli.errors import UserError
from memfactory_cli.registry import registry

RewardFunc = Callable[..., list[float | None]]


def completion_text(completion: Any) -> str:
    """Text of a completion, whether plain (str) or conversational (list of messages)."""
    if isinstance(completion, list):
        return completion[-1]["content"] if completion else ""
    return str(completion)


def _bind(func: RewardFunc, name: str, args: dict[str, Any]) -> RewardFunc:
    """A new function named ``name`` (TRL logs ``rewards/<name>/...``) that calls ``func`` with ``args``.

    A fresh function, not ``functools.partial`` (TRL would report the wrapped function's name) and not a renamed
    original (that would rename the registered function for everyone). Async rewards stay async.
    """
    if inspect.iscoroutinefunction(func):

        async def bound(*a: Any, **kw: Any) -> list[float | None]:
            return await func(*a, **{**args, **kw})
    else:

        def bound(*a: Any, **kw: Any) -> list[float | None]:
            return func(*a, **{**args, **kw})

    bound.__name__ = bound.__qualname__ = name
    bound.__doc__ = func.__doc__
    return bound


def build_reward_funcs(specs: list[RewardSpec]) -> tuple[list[RewardFunc], list[float]]:
    """Resolve each spec to a function named after it (TRL logs ``rewards/<name>/mean``), bound to its args."""
    if not specs:
        raise UserError("rewards: at least one reward is required")
    funcs, weights, names = [], [], set()
    for i, spec in enumerate(specs):
        func = registry("reward").get(spec.name)
        if not callable(func):
            raise UserError(f"rewards[{i}]: '{spec.name}' is not callable")
        params = inspect.signature(func).parameters
        for key in spec.args:
            if key not in params:
                valid = [p for p in params if p not in ("prompts", "completions", "kwargs")]
                raise UserError(f"rewards[{i}].args.{key}: '{spec.name}' takes no such argument; valid: {', '.join(valid) or 'none'}")
        name = spec.name.rsplit(":", 1)[-1]
        if name in names:
            raise UserError(f"rewards[{i}]: '{name}' is listed twice")
        names.add(name)
        funcs.append(_bind(func, name, dict(spec.args)))
        weights.append(float(spec.weight))
    return funcs, weights
