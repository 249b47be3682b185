"""Reward functions used by tests through the dotted-path escape hatch (``tests.helpers:length_reward``)."""

from __future__ import annotations

from memfactory_cli.rewards import completion_text


def length_reward(prompts, completions, **kwargs) -> list[float | None]:
    """Longer answers score higher: a random tiny model gets reward variance, hence non-zero advantages."""
    return [float(len(completion_text(c))) / 10.0 for c in completions]


_calls = 0


def signalling_length_reward(prompts, completions, **kwargs) -> list[float | None]:
    """``length_reward`` that sends this process a signal on its N-th call when ``MF_TEST_SIGNAL=N:SIGNAME`` is set.

    A deterministic way to interrupt or kill a training run at a known step (one call per generation).
    """
    import os
    import signal

    global _calls
    _calls += 1
    when, _, name = os.environ.get("MF_TEST_SIGNAL", "").partition(":")
    if when and int(when) == _calls:
        os.kill(os.getpid(), getattr(signal, name))
    return length_reward(prompts, completions, **kwargs)


def half_tied_length_reward(prompts, completions, question, **kwargs) -> list[float | None]:
    """``length_reward`` for questions of odd length; a constant for the others, so their groups have advantage 0."""
    lengths = length_reward(prompts, completions)
    return [length if len(q) % 2 else 1.0 for q, length in zip(question, lengths)]
