"""Environments: turn datasets into episodes and say how an answer is scored."""
