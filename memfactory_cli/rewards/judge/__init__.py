"""LLM-as-Judge: a reward (``llm_judge``) and an eval helper that ask a judge model whether an answer is correct.

``templates`` holds the prompts and strict parsers, ``backends`` the OpenAI-compatible and local-model callers,
``cache`` the shared on-disk verdict cache, ``core`` the ``Judge`` that ties them together, ``reward`` the
registered reward. See docs/judge.md.
"""

from memfactory_cli.rewards.judge.core import Judge, JudgeConfig, JudgeReport, get_judge
from memfactory_cli.rewards.judge.reward import judge_texts, llm_judge_reward

__all__ = ["Judge", "JudgeConfig", "JudgeReport", "get_judge", "judge_texts", "llm_judge_reward"]
