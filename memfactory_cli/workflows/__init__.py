"""Workflows: what each CLI command runs (train, eval, infer, data, list)."""
