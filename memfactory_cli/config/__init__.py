"""Typed recipe configuration (``schema``) and its YAML loader (``loader``)."""

from memfactory_cli.config.loader import build_dataclass, load_recipe, to_container, to_yaml
from memfactory_cli.config.schema import RecipeConfig

__all__ = ["RecipeConfig", "build_dataclass", "load_recipe", "to_container", "to_yaml"]
