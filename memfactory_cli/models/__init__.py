"""Model and tokenizer loading: hub ids, local folders and offline aliases."""
