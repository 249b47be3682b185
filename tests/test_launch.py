"""Several processes: the real ``accelerate launch`` re-execution on CPU (gloo), and the launch arithmetic."""

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from memfactory_cli.config import load_recipe
from memfactory_cli.errors import UserError
from memfactory_cli.workflows import launch
from tests.conftest import ROOT, tiny_overrides


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_train_the_tiny_recipe_through_the_launcher(tmp_path):
    out = tmp_path / "run"
    overrides = tiny_overrides(
        out,
        **{
            "trainer.max_steps": "2",
            "rewards": "[{name: 'tests.helpers:length_reward'}]",
            "launch.num_processes": "2",
            "launch.main_process_port": str(_free_port()),
        },
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "memfactory_cli", "train", "recipes/memagent_tiny_cpu.yaml", *overrides],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "launching 2 processes" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # one run directory, nothing left half-written beside it
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    info = json.loads((out / "launch.json").read_text())
    assert info["num_processes"] == 2 and info["distributed_type"] == "MULTI_CPU" and info["backend"] == "gloo"
    assert info["device"] == "cpu"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]  # rank 0 alone logs
    assert all(r["trajectories"] == 4 and r["rows"] > 4 for r in lines)  # 2 questions x G=2, split over 2 ranks
    assert lines[0]["grad_norm"] > 0
    assert {r["step"] for r in map(json.loads, (out / "rollouts.jsonl").read_text().splitlines())} == {1, 2}
    assert (out / "final" / "config.json").exists() and (out / "final" / "tokenizer_config.json").exists()
    assert load_recipe(out / "config.yaml").launch.num_processes == 2


def test_recipe_errors_stop_before_any_process_starts(tmp_path, capsys):
    from memfactory_cli.workflows import train

    overrides = tiny_overrides(tmp_path / "run", **{"launch.num_processes": "3"})  # 4 trajectories over 3 processes
    with pytest.raises(UserError, match="split evenly over 3 process"):
        train.run(None, overrides)
    assert "launching" not in capsys.readouterr().out and not (tmp_path / "run").exists()


def test_launch_only_when_asked_and_never_twice():
    cfg = load_recipe(None, [])
    assert not launch.should_launch(cfg, {})
    many = load_recipe(None, ["launch.num_processes=4"])
    assert launch.should_launch(many, {})
    assert not launch.should_launch(many, {"LOCAL_RANK": "0", "WORLD_SIZE": "4"})  # already launched
    assert launch.should_launch(cfg, {"NNODES": "2", "MASTER_ADDR": "10.0.0.1"})  # multi-node from the environment


def test_multi_node_command_from_the_environment():
    cfg = load_recipe(None, ["launch.num_processes=8", "launch.config_file=zero3"])
    env = {"NNODES": "4", "NODE_RANK": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29555"}
    cmd = launch.launch_command(cfg, "r.yaml", ["trainer.max_steps=5"], env)
    args = dict(zip(cmd[3:17:2], cmd[4:18:2]))
    assert args == {
        "--config_file": str(launch.ACCELERATE_DIR / "zero3.yaml"),
        "--num_processes": "32",
        "--num_machines": "4",
        "--machine_rank": "2",
        "--main_process_ip": "10.0.0.1",
        "--main_process_port": "29555",
        "--module": "memfactory_cli",
    }
    assert cmd[-3:] == ["train", "r.yaml", "trainer.max_steps=5"]


@pytest.mark.parametrize(
    "env,match",
    [
        ({"NNODES": "2"}, "needs MASTER_ADDR"),
        ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "h"}, "NODE_RANK must be in"),
        ({"NPROC_PER_NODE": "x"}, "NPROC_PER_NODE must be an integer"),
    ],
)
def test_bad_launch_environment_is_one_clear_error(env, match):
    with pytest.raises(UserError, match=match):
        launch.topology(load_recipe(None, []).launch, env)


def test_shipped_accelerate_configs():
    kinds = {"ddp": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp2": "FSDP"}
    for name, kind in kinds.items():
        data = yaml.safe_load(launch.accelerate_config(name).read_text())
        assert data["distributed_type"] == kind and data["mixed_precision"] == "no"  # trainer.bf16 decides
    assert yaml.safe_load(launch.accelerate_config("zero3").read_text())["deepspeed_config"]["zero_stage"] == 3
    assert launch.accelerate_config("") == launch.accelerate_config("ddp")
    with pytest.raises(UserError, match="neither one of ddp"):
        launch.accelerate_config("zero4")


# -- where each launched process runs (C1, M3): decided by pure functions, the CUDA probe faked ------------------
@pytest.mark.parametrize("local", ["0", "3"])
def test_gpu_ranks_get_nccl_and_their_own_gpu(local):
    env = {"LOCAL_RANK": local, "RANK": local, "WORLD_SIZE": "4"}
    assert launch.placement("cuda", env, gpus=4) == launch.Placement("nccl", f"cuda:{local}")


def test_cpu_ranks_get_gloo_even_beside_gpus():
    env = {"LOCAL_RANK": "1", "RANK": "1", "WORLD_SIZE": "2"}
    assert launch.placement("cpu", env, gpus=0) == launch.Placement("gloo", "cpu")
    assert launch.placement("cpu", env, gpus=8) == launch.Placement("gloo", "cpu")


def test_a_rank_without_a_gpu_of_its_own_is_one_clear_error():
    with pytest.raises(UserError, match="LOCAL_RANK=2 has no GPU of its own: this node shows 2"):
        launch.placement("cuda", {"LOCAL_RANK": "2", "WORLD_SIZE": "4"}, gpus=2)


class _RecordingState:
    """Stands in for accelerate's PartialState: records how (and after what) it was created."""

    calls: list = []
    _shared_state: dict = {}

    def __init__(self, cpu: bool = False):
        type(self).calls.append(("PartialState", cpu))
        self.backend = "gloo" if cpu else "nccl"


def test_a_launched_gpu_rank_binds_its_gpu_before_the_process_group_starts(monkeypatch):
    import accelerate
    import torch

    _RecordingState.calls = []
    monkeypatch.setattr(accelerate, "PartialState", _RecordingState)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: _RecordingState.calls.append(("set_device", d)))
    for name, value in {"LOCAL_RANK": "2", "RANK": "6", "WORLD_SIZE": "8"}.items():
        monkeypatch.setenv(name, value)
    assert launch.bind_process("cuda") == launch.Placement("nccl", "cuda:2")
    assert _RecordingState.calls == [("set_device", "cuda:2"), ("PartialState", False)]


def test_rank_is_known_without_creating_a_process_group(monkeypatch):
    """The first PartialState fixes the backend for good: asking 'am I rank 0?' must not create one (it was cpu=True)."""
    import accelerate

    _RecordingState.calls = []
    monkeypatch.setattr(accelerate, "PartialState", _RecordingState)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    assert not launch.is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert launch.is_main_process()
    assert _RecordingState.calls == []


def test_one_process_on_a_multi_gpu_host_keeps_to_one_gpu():
    cuda = load_recipe(None, ["trainer.device=cuda"])
    assert launch.single_gpu_pin(cuda, {}, gpus=8) == "0"
    assert launch.single_gpu_pin(load_recipe(None, ["trainer.device=auto"]), {}, gpus=2) == "0"
    assert launch.single_gpu_pin(cuda, {"CUDA_VISIBLE_DEVICES": "3,5"}, gpus=2) == "3"
    assert launch.single_gpu_pin(cuda, {}, gpus=1) is None
    assert launch.single_gpu_pin(load_recipe(None, ["trainer.device=cpu"]), {}, gpus=8) is None
    many = load_recipe(None, ["trainer.device=cuda", "launch.num_processes=8"])
    assert launch.single_gpu_pin(many, {}, gpus=8) is None  # the launcher gives each process its own
    assert launch.single_gpu_pin(cuda, {"LOCAL_RANK": "0", "WORLD_SIZE": "8"}, gpus=8) is None


def test_the_pin_applies_before_cuda_starts_or_is_one_clear_error(monkeypatch, capsys):
    import torch

    cfg = load_recipe(None, ["trainer.device=cuda"])
    for name in ("LOCAL_RANK", "WORLD_SIZE", "NPROC_PER_NODE", "NNODES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if os.environ["CUDA_VISIBLE_DEVICES"] else 8)
    launch.pin_single_gpu(cfg)  # NVML counts: the variable still applies
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0" and "training on GPU 0" in capsys.readouterr().out
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)  # CUDA already initialised: it no longer applies
    with pytest.raises(UserError, match="set CUDA_VISIBLE_DEVICES=0 for one GPU, or launch.num_processes=8"):
        launch.pin_single_gpu(cfg)
