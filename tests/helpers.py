"""Reward functions used by tests through the dotted-path escape hatch (``tests.helpers:length_reward``)."""

from __future__ import annotations

from memfactory_cli.rewards import completion_text


def length_reward(prompts, completions, **kwargs) -> list[float | None]:
    """Longer answers score higher: a random tiny model gets reward variance, hence non-zero advantages."""
    return [float(len(completion_text(c))) / 10.0 for c in completions]
