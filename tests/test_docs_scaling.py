"""Every ``memfactory train`` command in docs/scaling.md passes ``memfactory check``.

The check runs as it would on the user's machine before launch, for the world size the command launches
(``launch.num_processes`` x ``NNODES`` from its environment prefix, or ``#SBATCH --nodes``), with the CUDA probe
faked (8 GPUs) and three settings swapped for what this CPU machine has: the tiny model for the hub model, the
synthetic data for the downloaded parquet, and ``generation.backend=hf`` (vLLM is not installed). Everything else of
the command is checked as written: recipe keys, the batch layout, the launch and sharding settings.
"""

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOC = ROOT / "docs" / "scaling.md"
OFFLINE = [
    "model.name_or_path=tiny-qwen3-bpe",
    "data.train=synth_train",
    "data.eval=synth_eval",
    "generation.backend=hf",
]
COMMAND = re.compile(r"((?:\b[A-Z_]+=\S+\s+)*)memfactory train (recipes/\S+?\.yaml)((?:\s+[\w.]+=[^\s`'|]+)*)")


def documented_commands() -> list[tuple[dict[str, str], str, list[str]]]:
    text = DOC.read_text(encoding="utf-8").replace("\\\n", " ")
    commands = []
    for block in re.split(r"^```", text, flags=re.M):
        nodes = re.search(r"#SBATCH .*--nodes=(\d+)", block)
        for m in COMMAND.finditer(block):
            env = dict(pair.split("=", 1) for pair in m.group(1).split())
            env = {k: v for k, v in env.items() if "$" not in v}
            if nodes:
                env.setdefault("NNODES", nodes.group(1))
            if int(env.get("NNODES", "1")) > 1:
                env.setdefault("MASTER_ADDR", "10.0.0.1")
            commands.append((env, m.group(2), m.group(3).split()))
    return commands


COMMANDS = documented_commands()


def test_the_doc_has_commands_for_one_to_eight_gpus_and_two_nodes():
    from memfactory_cli.config import load_recipe
    from memfactory_cli.workflows.launch import world_size

    worlds = {world_size(load_recipe(recipe, overrides), {k: v for k, v in env.items()}) for env, recipe, overrides in COMMANDS}
    assert {1, 2, 4, 8, 16} <= worlds, worlds
    assert any(env.get("NNODES") == "2" for env, _, _ in COMMANDS)


@pytest.mark.parametrize("env,recipe,overrides", COMMANDS, ids=[" ".join(c[2]) or c[1] for c in COMMANDS])
def test_documented_command_passes_check(env, recipe, overrides, tmp_path, monkeypatch):
    import torch

    from memfactory_cli.config import load_recipe
    from memfactory_cli.workflows.check import run_checks

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    for name in ("WORLD_SIZE", "LOCAL_RANK", "RANK", "NNODES", "NODE_RANK", "MASTER_ADDR", "NPROC_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = load_recipe(recipe, [*overrides, *OFFLINE, f"output.dir={tmp_path / 'run'}"])
    report = run_checks(cfg, "train", strict=False)
    assert report.problems == []
    assert Path(recipe).name in {p.name for p in (ROOT / "recipes").glob("*.yaml")}
