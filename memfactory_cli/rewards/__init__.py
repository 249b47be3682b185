"""Rewards: plain batch functions ``(prompts, completions, **kwargs) -> list[float | None]``.

``None`` means "could not be scored" (TRL then leaves it out); it is never turned into 0.
"""

from memfactory_cli.rewards.base import build_reward_funcs, completion_text

__all__ = ["build_reward_funcs", "completion_text"]
