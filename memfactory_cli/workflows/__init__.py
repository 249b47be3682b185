"""One module per command (train, eval, check, infer, serve, data, list) and what they share; orchestration only."""
