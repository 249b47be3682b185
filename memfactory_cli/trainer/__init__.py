"""Trainer: GRPO through TRL's GRPOTrainer, with one training row per trainable turn."""
