"""Several training processes: ``memfactory train`` re-executes itself under ``accelerate launch``.

As in LLaMA-Factory, the user runs the same command on one GPU or many; the recipe (``launch.num_processes``) or
the environment (``NNODES``, ``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``, ``NPROC_PER_NODE``, the variables
torchrun and SLURM templates already use) says how many processes. A process that is itself launched (torchrun or
accelerate set ``LOCAL_RANK``/``WORLD_SIZE``) never launches again, so ``accelerate launch -m memfactory_cli train``
and ``torchrun -m memfactory_cli train`` work too.

Before launching, the parent process validates the recipe and does everything that ends up cached on disk (the
model alias build or hub-cache check, the data sets, the batch arithmetic for the real world size), once per node
and before any process group exists: a long download or a synthetic build cannot trip the process group's timeout,
and a recipe error is one line instead of N tracebacks. Inside the launched processes rank 0 goes first through the
(now cached) preparation and the others follow (:func:`main_process_first`); only rank 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memfactory_cli.config.schema import LaunchConfig, RecipeConfig
from memfactory_cli.errors import UserError
from memfactory_cli.io import atomic_dir, atomic_write_text

ACCELERATE_CONFIGS = ("ddp", "zero2", "zero3", "fsdp2")
ACCELERATE_DIR = Path(__file__).resolve().parents[2] / "recipes" / "accelerate"


@dataclass(frozen=True)
class Topology:
    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name} must be an integer, got '{raw}'") from None


def topology(cfg: LaunchConfig, env: Mapping[str, str] = os.environ) -> Topology:
    """Nodes x processes per node, from the recipe with the launcher's environment variables taking precedence."""
    topo = Topology(
        nnodes=_env_int(env, "NNODES", 1),
        node_rank=_env_int(env, "NODE_RANK", 0),
        nproc_per_node=_env_int(env, "NPROC_PER_NODE", cfg.num_processes),
        master_addr=env.get("MASTER_ADDR", "") or "127.0.0.1",
        master_port=_env_int(env, "MASTER_PORT", cfg.main_process_port),
    )
    if topo.nproc_per_node < 1:
        raise UserError(f"launch.num_processes (or NPROC_PER_NODE) must be >= 1, got {topo.nproc_per_node}")
    if topo.nnodes < 1 or not 0 <= topo.node_rank < topo.nnodes:
        raise UserError(f"NODE_RANK must be in 0..NNODES-1, got NODE_RANK={topo.node_rank} NNODES={topo.nnodes}")
    if topo.nnodes > 1 and not env.get("MASTER_ADDR"):
        raise UserError(f"NNODES={topo.nnodes} needs MASTER_ADDR (the address of node 0) on every node")
    return topo


def world_size(cfg: RecipeConfig, env: Mapping[str, str] = os.environ) -> int:
    """The processes this run trains with: the launcher's ``WORLD_SIZE`` inside a launched process, else the
    processes ``memfactory train`` will launch (``launch.num_processes`` x nodes)."""
    return _env_int(env, "WORLD_SIZE", 1) if launched(env) else topology(cfg.launch, env).world_size


def launched(env: Mapping[str, str] = os.environ) -> bool:
    """True inside a process started by torchrun / accelerate launch."""
    return "LOCAL_RANK" in env or _env_int(env, "WORLD_SIZE", 1) > 1


def should_launch(cfg: RecipeConfig, env: Mapping[str, str] = os.environ) -> bool:
    return not launched(env) and topology(cfg.launch, env).world_size > 1


def accelerate_config(name: str) -> Path:
    """``ddp`` | ``zero2`` | ``zero3`` | ``fsdp2`` (shipped in recipes/accelerate/), or a path to one's own."""
    name = name or "ddp"
    if name in ACCELERATE_CONFIGS:
        path = ACCELERATE_DIR / f"{name}.yaml"
        if not path.is_file():
            raise UserError(f"launch.config_file: {path} is missing (the shipped accelerate configs live in the repo)")
        return path
    path = Path(name).expanduser()
    if not path.is_file():
        raise UserError(f"launch.config_file '{name}' is neither one of {', '.join(ACCELERATE_CONFIGS)} nor a file")
    return path


def sharding_problem(cfg: RecipeConfig, device: str, env: Mapping[str, str] = os.environ) -> str | None:
    """Why the recipe's sharded accelerate config would not shard, or None.

    accelerate turns a DeepSpeed or FSDP config into DeepSpeed / FSDP only on accelerators: several CPU processes
    with ``zero3`` or ``fsdp2`` silently train plain DDP. Checked before launch (a launched process is past it).
    """
    import yaml

    if device != "cpu" or launched(env) or topology(cfg.launch, env).world_size == 1:
        return None
    path = accelerate_config(cfg.launch.config_file)
    kind = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("distributed_type")
    if kind not in ("DEEPSPEED", "FSDP"):
        return None
    return (
        f"launch.config_file={cfg.launch.config_file} ({kind}) shards only on GPUs: on CPU processes accelerate trains "
        "plain DDP; use launch.config_file=ddp, or trainer.device=cuda"
    )


def launch_command(
    cfg: RecipeConfig, recipe: str | None, overrides: list[str], env: Mapping[str, str] = os.environ, resume: str | None = None
) -> list[str]:
    """The ``accelerate launch`` command line that re-runs this ``memfactory train`` in every process."""
    topo = topology(cfg.launch, env)
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(accelerate_config(cfg.launch.config_file)),
        "--num_processes", str(topo.world_size),
        "--num_machines", str(topo.nnodes),
        "--machine_rank", str(topo.node_rank),
        "--main_process_ip", topo.master_addr,
        "--main_process_port", str(topo.master_port),
        "--module", "memfactory_cli", "train", *([recipe] if recipe else []), *overrides,
        *(["--resume", resume] if resume else []),
    ]  # fmt: skip


def prepare(cfg: RecipeConfig, world_size: int) -> None:
    """Everything that fails on bad input or fills a disk cache, done once before the processes start."""
    from memfactory_cli.models.loading import resolve_device, resolve_model_path
    from memfactory_cli.rewards import build_reward_funcs
    from memfactory_cli.trainer.config import batch_layout, generation_fields
    from memfactory_cli.workflows.common import build_env

    batch_layout(cfg, world_size)
    device = resolve_device(cfg.trainer.device)
    generation_fields(cfg.generation, device)
    if device == "cuda":
        import torch

        per_node = topology(cfg.launch).nproc_per_node
        if per_node > torch.cuda.device_count():
            raise UserError(f"{per_node} processes per node but only {torch.cuda.device_count()} GPU(s) are visible")
    build_reward_funcs(cfg.rewards)
    resolve_model_path(cfg.model.name_or_path)
    env = build_env(cfg)
    env.rows("train")
    if cfg.trainer.eval_before_after:
        env.rows("eval")


def relaunch(cfg: RecipeConfig, recipe: str | None, overrides: list[str], resume: str | None = None) -> Path:
    """Prepare, run ``accelerate launch`` in the foreground, and return the run folder (or exit with its code)."""
    topo = topology(cfg.launch)
    prepare(cfg, topo.world_size)
    command = launch_command(cfg, recipe, overrides, resume=resume)
    print(f"memfactory: launching {topo.world_size} processes ({topo.nnodes} node(s)): {' '.join(command[1:])}", flush=True)
    env = {**os.environ, "MEMFACTORY_LAUNCHER": "accelerate"}
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise SystemExit(result.returncode)
    return Path(cfg.output.dir)


# -- inside the launched processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where one launched process runs: its process-group backend and its torch device."""

    backend: str
    device: str


def placement(device: str, env: Mapping[str, str], gpus: int) -> Placement:
    """nccl on ``cuda:LOCAL_RANK`` for a CUDA run, gloo on the CPU otherwise.

    ``device`` is the run's resolved ``trainer.device`` and ``gpus`` the GPUs this node shows; a pure function, so
    the choice is tested without GPUs.
    """
    if device != "cuda":
        return Placement("gloo", "cpu")
    local = _env_int(env, "LOCAL_RANK", 0)
    if not 0 <= local < gpus:
        raise UserError(f"process LOCAL_RANK={local} has no GPU of its own: this node shows {gpus} GPU(s)")
    return Placement("nccl", f"cuda:{local}")


def bind_process(device: str) -> Placement:
    """Put this process on its device, then start the process group there; before any model or state exists.

    accelerate's process-wide ``PartialState`` keeps the first backend it is created with (and transformers' later
    reset never replaces the process group), so it is created here, once, from the run's device: a GPU rank that
    first met a ``PartialState(cpu=True)`` ran every collective through gloo and loaded its model onto cuda:0.
    """
    import torch

    place = placement(device, os.environ, torch.cuda.device_count() if device == "cuda" else 0)
    if not distributed():
        return place
    if place.device != "cpu":
        torch.cuda.set_device(place.device)  # `.to("cuda")` in load_model now means this rank's GPU
    from accelerate import PartialState

    state = PartialState(cpu=place.device == "cpu")
    if place.backend not in str(state.backend):
        raise RuntimeError(f"process group is '{state.backend}', expected '{place.backend}' for {place.device}")
    return place


def single_gpu_pin(cfg: RecipeConfig, env: Mapping[str, str], gpus: int) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` that keeps a one-process, unlaunched CUDA run on one GPU, or None to leave it.

    With several GPUs visible, transformers counts them all (``n_gpu``) and TRL refuses ``nn.DataParallel``, after
    the model has loaded; one process means one GPU, the first visible one.
    """
    if gpus <= 1 or cfg.trainer.device == "cpu" or launched(env) or topology(cfg.launch, env).world_size > 1:
        return None
    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    return visible.split(",")[0].strip() if visible else "0"


def pin_single_gpu(cfg: RecipeConfig) -> None:
    """Apply :func:`single_gpu_pin` before anything initialises CUDA (``torch.cuda.device_count`` reads NVML)."""
    import torch

    gpus = torch.cuda.device_count()
    pin = single_gpu_pin(cfg, os.environ, gpus)
    if pin is None:
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = pin
    if torch.cuda.device_count() != 1:  # CUDA was initialised already: the variable no longer applies
        raise UserError(
            f"{gpus} GPUs are visible to a one-process run; set CUDA_VISIBLE_DEVICES=0 for one GPU, "
            f"or launch.num_processes={gpus} to train on all of them"
        )
    print(
        f"memfactory: {gpus} GPUs visible, launch.num_processes=1: training on GPU {pin} "
        f"(launch.num_processes={gpus} uses them all)",
        flush=True,
    )


def distributed() -> bool:
    return _env_int(os.environ, "WORLD_SIZE", 1) > 1


def _state():
    """accelerate's ``PartialState``, which :func:`bind_process` created for the run's device."""
    from accelerate import PartialState

    if not PartialState._shared_state:
        raise RuntimeError("launch.bind_process(device) must run before the process group is used")
    return PartialState()


def is_main_process() -> bool:
    """Rank 0 (the launcher's ``RANK``), known without a process group."""
    return _env_int(os.environ, "RANK", 0) == 0


@contextlib.contextmanager
def main_process_first() -> Iterator[bool]:
    """Rank 0 runs the block first (filling caches), then the others; yields whether this is rank 0."""
    if not distributed():
        yield True
        return
    state = _state()
    with state.main_process_first():
        yield state.is_main_process


def record_launch(run_dir: Path, state: Any) -> None:
    """``launch.json`` in the run folder: how many processes of which kind trained it (rank 0, distributed only).

    ``state`` is the trainer's ``AcceleratorState``: only the Accelerator knows whether the run is DDP, DeepSpeed or
    FSDP.
    """
    if not distributed():
        return
    info = {
        "num_processes": state.num_processes,
        "nnodes": _env_int(os.environ, "NNODES", 1),
        "distributed_type": str(state.distributed_type).rsplit(".", 1)[-1],
        "backend": state.backend,
        "device": str(state.device).split(":")[0],
        "launcher": os.environ.get("MEMFACTORY_LAUNCHER", "external"),
    }
    atomic_write_text(run_dir / "launch.json", json.dumps(info, indent=2))


@contextlib.contextmanager
def shared_atomic_dir(path: Path) -> Iterator[Path]:
    """:func:`memfactory_cli.io.atomic_dir` for collective saves: every rank gets the same temporary folder (ZeRO-3
    and FSDP gather weights from all ranks and write from rank 0), rank 0 publishes it in one rename."""
    if not distributed():
        with atomic_dir(path) as tmp:
            yield tmp
        return
    state = _state()
    tmp = path.with_name(f".{path.name}.partial")
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    state.wait_for_everyone()
    yield tmp
    state.wait_for_everyone()
    if state.is_main_process:
        with atomic_dir(path) as final:
            final.rmdir()
            os.replace(tmp, final)
    state.wait_for_everyone()
