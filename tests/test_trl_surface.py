"""What ``MemGRPOTrainer`` takes from TRL, checked by name and signature: a TRL upgrade that removes or reshapes one
fails here with the name, not deep inside a training step. The list matches the class docstring of
``trainer/grpo.py`` (each override, each private name) and ``trainer/trl_patches.py``."""

from __future__ import annotations

import inspect

import pytest
import trl.trainer.utils as trl_utils
from trl import GRPOTrainer

# Methods MemGRPOTrainer overrides (and calls through super()), with the parameters it passes.
OVERRIDDEN = {
    "_generate_and_score_completions": ["inputs"],
    "_prepare_inputs": ["generation_batch"],
    "_calculate_rewards": ["inputs", "prompts", "completions", "completion_ids_list"],
    "_get_train_sampler": ["dataset"],
    "_get_output_dir": ["trial"],
    "_save_checkpoint": ["model", "trial"],
    "log": ["logs", "start_time"],
}
# Private TRL methods it calls, with the leading parameters it passes positionally or by name.
CALLED = {
    "_generate_single_turn": ["prompt_ids", "images", "multimodal_fields", "num_generations"],
    "_get_per_token_logps_and_entropies": ["model", "input_ids", "attention_mask", "logits_to_keep", "batch_size"],
}
# Instance attributes GRPOTrainer sets that it reads (private ones first).
ATTRIBUTES = (
    "_tokenizer", "_metrics", "_step", "generation_config", "vllm_generation", "use_vllm",
    "use_transformers_continuous_batching", "reward_func_names", "reward_weights", "num_iterations", "loss_type",
    "top_entropy_quantile", "beta", "ref_model",
)  # fmt: skip
# Module attributes of trl.trainer.utils it reads or replaces (trainer/trl_patches.py).
UTILS = ("_use_triton", "_CHUNKED_LOGPROB_CHUNK_SIZE", "use_adapter")


def _params(name: str) -> list[str]:
    member = getattr(GRPOTrainer, name, None)
    assert member is not None, f"TRL's GRPOTrainer has no '{name}' any more: MemGRPOTrainer relies on it"
    return [p for p in inspect.signature(member).parameters if p != "self"]


@pytest.mark.parametrize("name,expected", [*OVERRIDDEN.items(), *CALLED.items()])
def test_trl_methods_we_override_or_call_keep_their_signature(name, expected):
    params = _params(name)
    assert params[: len(expected)] == expected, (
        f"GRPOTrainer.{name} now takes {params}; MemGRPOTrainer passes {expected}: update trainer/grpo.py"
    )


def test_rollout_func_is_a_constructor_argument():
    assert "rollout_func" in inspect.signature(GRPOTrainer.__init__).parameters, (
        "GRPOTrainer(rollout_func=...) is gone: MemGRPOTrainer hands TRL its agent rollout through it"
    )


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_trainer_attributes_we_read_are_still_set(attribute):
    source = inspect.getsource(inspect.getmodule(GRPOTrainer))
    assert f"self.{attribute} =" in source or f"self.{attribute}:" in source, (
        f"GRPOTrainer no longer sets self.{attribute}: MemGRPOTrainer reads it"
    )


@pytest.mark.parametrize("name", UTILS)
def test_trl_utils_names_we_patch_or_use_exist(name):
    assert hasattr(trl_utils, name), f"trl.trainer.utils.{name} is gone: trainer/trl_patches.py or grpo.py uses it"


def test_every_override_is_listed_in_the_trainer_docstring():
    from memfactory_cli.trainer.grpo import MemGRPOTrainer

    ours = {n for n, v in vars(MemGRPOTrainer).items() if callable(v) and n in dir(GRPOTrainer) and n != "__init__"}
    assert ours == set(OVERRIDDEN), f"overrides changed: {sorted(ours ^ set(OVERRIDDEN))}; update OVERRIDDEN and the docstring"
    doc = MemGRPOTrainer.__doc__ or ""
    missing = [n for n in [*OVERRIDDEN, *CALLED, *ATTRIBUTES[:3], *UTILS[:2]] if n not in doc]
    assert not missing, f"MemGRPOTrainer's docstring does not name {missing}"


def test_the_schema_offers_exactly_the_installed_transformers_schedulers():
    from typing import get_args, get_type_hints

    from transformers.trainer_utils import SchedulerType

    from memfactory_cli.config.schema import TrainerConfig

    declared = get_args(get_type_hints(TrainerConfig)["lr_scheduler_type"])
    assert sorted(declared) == sorted(s.value for s in SchedulerType)
