"""Recipe loading: YAML + dot-overrides -> validated, typed ``RecipeConfig``.

OmegaConf does the merging and type checks; the key walk here exists only to turn a typo into one line that names
the bad key and the closest valid one.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from memfactory_cli.config.schema import RecipeConfig
from memfactory_cli.errors import UserError, did_you_mean
from memfactory_cli.io import read_text_file

T = TypeVar("T")


def _nested_dataclass(tp: Any) -> Any:
    """The dataclass inside ``tp`` (``X``, ``Optional[X]``, ``List[X]``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _all_paths(cls: Any, prefix: str = "") -> list[str]:
    paths = []
    for f in dataclasses.fields(cls):
        sub = _nested_dataclass(typing.get_type_hints(cls)[f.name])
        paths.append(prefix + f.name)
        if sub is not None and typing.get_origin(typing.get_type_hints(cls)[f.name]) is not list:
            paths += _all_paths(sub, prefix + f.name + ".")
    return paths


def unknown_keys(data: Any, cls: Any, where: str = "") -> list[str]:
    """Every key of ``data`` that ``cls`` does not declare, each as a one-line message with a suggestion."""
    if not isinstance(data, dict):
        return []
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    problems = []
    for key, value in data.items():
        path = f"{where}{key}"
        if key not in names:
            close = did_you_mean(str(key), names)
            hint = close.replace("'", f"'{where}", 1) if close else ""
            if not hint:
                elsewhere = [p for p in _all_paths(RecipeConfig) if p.rsplit(".", 1)[-1] == key]
                hint = f" (did you mean '{elsewhere[0]}'?)" if elsewhere else ""
            problems.append(f"unknown key '{path}'{hint}; valid keys here: {', '.join(names)}")
            continue
        sub = _nested_dataclass(hints[key])
        if sub is None:
            continue
        if typing.get_origin(hints[key]) is list and isinstance(value, list):
            for i, item in enumerate(value):
                problems += unknown_keys(item, sub, f"{path}[{i}].")
        else:
            problems += unknown_keys(value, sub, f"{path}.")
    return problems


def build_dataclass(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Validate ``data`` against ``cls`` (keys and types) and return the typed instance."""
    problems = unknown_keys(data, cls, f"{where}." if where else "")
    if problems:
        raise UserError(problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(data))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        full_key = getattr(exc, "full_key", "") or ""
        key = f"{where}.{full_key}" if where and full_key else (full_key or where)
        msg = str(exc).splitlines()[0]
        hint = help_of(cls, full_key)
        raise UserError(f"{key}: {msg}" + (f" — help: {hint}" if hint else "")) from None


def help_of(cls: type, dotted: str) -> str | None:
    """The ``help`` metadata of the field at ``dotted`` (``trainer.loss_type``, ``rewards[0].name``) of ``cls``."""
    current: Any = cls
    meta = None
    for part in re.sub(r"\[\d+\]", "", dotted).split(".") if dotted else []:
        if not dataclasses.is_dataclass(current):
            return None
        field = next((f for f in dataclasses.fields(current) if f.name == part), None)
        if field is None:
            return None
        meta = field.metadata.get("help")
        hint = typing.get_type_hints(current).get(part)
        args = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        current = args[0] if args else hint
    return meta


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    text = read_text_file(p, "recipe")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{p}:{where}: malformed YAML: {problem}") from None
    if data is None:
        raise UserError(f"{p}: the recipe is empty")
    if not isinstance(data, dict):
        raise UserError(f"{p}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise UserError(f"override '{item}' must look like section.key=value")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise UserError(f"bad override: {str(exc).splitlines()[0]}") from None


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def recipe_data(path: str | os.PathLike | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The recipe's YAML with the dot-overrides merged in, not yet validated."""
    data = read_yaml(path) if path is not None else {}
    return _deep_merge(data, parse_overrides(overrides or []))


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None) -> RecipeConfig:
    """Read a recipe (or the defaults when ``path`` is None), apply dot-overrides, validate, and type it."""
    data = recipe_data(path, overrides)
    prefix = f"{path}: " if path is not None else ""
    try:
        return build_dataclass(RecipeConfig, data, "")
    except UserError as exc:
        raise UserError(prefix + str(exc)) from None


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_container(cfg: Any) -> dict[str, Any]:
    """The typed recipe as plain dicts and lists (for loggers that store the configuration)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]
