"""Imports point one way: cli -> workflows -> trainer -> agents -> envs/rewards/report -> generation -> modules -> models/data -> config."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "memfactory_cli"
RANK = {"__main__": -1, "cli": 0, "workflows": 1, "trainer": 2, "agents": 3, "envs": 4, "rewards": 4, "report": 4, "generation": 5, "modules": 6, "models": 7, "data": 7, "config": 8}


def layer(module: str) -> int:
    top = module.split(".")[0]
    return RANK.get(top, 9)  # errors, registry, io: the bottom


def test_imports_point_downwards():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        here = path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("memfactory_cli."):
                target = node.module.removeprefix("memfactory_cli.")
                if layer(target) < layer(here) and not here.startswith("registry"):
                    problems.append(f"{here} imports {target}")
    assert not problems, problems
