from pathlib import Path

import pytest

from memfactory_cli.config import load_recipe, to_yaml
from memfactory_cli.errors import UserError
from memfactory_cli.registry import registry
from tests.conftest import ROOT

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe):
    cfg = load_recipe(recipe)
    assert cfg.agent.name in registry("agent").names() and cfg.env.name in registry("env").names()
    assert cfg.trainer.max_steps > 0


def test_dot_overrides_reach_typed_fields():
    cfg = load_recipe(ROOT / "recipes/memagent_tiny_cpu.yaml", ["trainer.max_steps=7", "output.dir=runs/smoke"])
    assert cfg.trainer.max_steps == 7 and isinstance(cfg.trainer.max_steps, int)
    assert cfg.output.dir == "runs/smoke"


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(UserError, match=r"unknown key 'trainer.max_step' \(did you mean 'trainer.max_steps'\?\)"):
        load_recipe(None, ["trainer.max_step=2"])


def test_key_in_the_wrong_section_points_to_the_right_one():
    with pytest.raises(UserError, match=r"unknown key 'model.max_steps' \(did you mean 'trainer.max_steps'\?\)"):
        load_recipe(None, ["model.max_steps=2"])


def test_unknown_key_inside_a_list_item(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("rewards:\n  - {name: f1, wieght: 2}\n")
    with pytest.raises(UserError, match=r"rewards\[0\].wieght.*did you mean 'rewards\[0\].weight'"):
        load_recipe(recipe)


def test_wrong_type_names_the_key():
    with pytest.raises(UserError, match="trainer.max_steps"):
        load_recipe(None, ["trainer.max_steps=abc"])


def test_malformed_yaml_gives_the_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("trainer:\n  max_steps: [1, 2\n")
    with pytest.raises(UserError, match=r"bad.yaml: line \d+: malformed YAML"):
        load_recipe(recipe)


@pytest.mark.parametrize("text,match", [("", "empty"), ("- a\n- b\n", "mapping")])
def test_empty_or_non_mapping_recipe(tmp_path, text, match):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(UserError, match=match):
        load_recipe(recipe)


def test_missing_recipe():
    with pytest.raises(UserError, match="recipe not found"):
        load_recipe(Path("nope.yaml"))


def test_bad_override_syntax():
    with pytest.raises(UserError, match="section.key=value"):
        load_recipe(None, ["trainer.max_steps"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_recipe(ROOT / "recipes/memagent_smollm2_cpu.yaml", ["trainer.max_steps=3"])
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))
    assert load_recipe(saved) == cfg
