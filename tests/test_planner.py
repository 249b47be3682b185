"""The memory planner: the GPU recipes fit one 80 GB GPU, their old settings name the phase that does not."""

from __future__ import annotations

import os

import pytest

from memfactory_cli.config import load_recipe
from memfactory_cli.errors import UserError
from tests.conftest import ROOT, run_cli, tiny_overrides

DATA = {
    "memagent": ["data.train=synth_train", "data.eval=synth_eval", "data.synth.n_train=8", "data.synth.n_eval=4"],
    "memory_r1": ["data.train=synth_dialogue_turns_train", "data.eval=synth_dialogue_eval"],
    "rmm": ["data.train=rmm_synth_train", "data.eval=rmm_synth_eval"],
}
# The settings the recipes shipped with before the planner: the phase each does not fit in 80 GiB.
OLD = {
    "memagent_qwen3_1.7b.yaml": (["trainer.gradient_accumulation_steps=96", "trainer.reference_dtype=float32"], "the update"),
    "memagent_qwen3_4b_instruct.yaml": (["model.lora.enabled=false", "model.dtype=float32", "trainer.reference_dtype=float32"], "the update"),
    "memory_r1_qwen3_1.7b.yaml": (["generation.kv_cache_budget=none", "trainer.reference_dtype=float32"], "the rollout"),
    "rmm_qwen3_1.7b.yaml": None,  # a frozen bf16 LLM (linear reranker): it fitted before too
}


def _check(capsys, tmp_path, recipe: str, *overrides: str) -> tuple[int, str, str]:
    family = "memory_r1" if "memory_r1" in recipe else "rmm" if "rmm" in recipe else "memagent"
    args = ["check", str(ROOT / "recipes" / recipe), "--gpu-memory", "80GiB", *DATA[family], f"output.dir={tmp_path}/run"]
    code = run_cli(*args, *overrides)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("recipe", sorted(OLD))
def test_gpu_recipes_fit_one_80gb_gpu_and_their_old_settings_do_not(fake_hub, capsys, tmp_path, recipe):
    code, out, err = _check(capsys, tmp_path, recipe)
    assert "memory plan" in out and "DOES NOT FIT" not in out, out + err
    assert code == 0, err
    if OLD[recipe] is None:
        return
    overrides, phase = OLD[recipe]
    code, out, err = _check(capsys, tmp_path, recipe, *overrides)
    assert code == 2 and "DOES NOT FIT" in out
    assert f"memory plan: {phase}" in err and "needs about" in err  # names the phase and what to change
    assert "->" in out.split("DOES NOT FIT", 1)[1]  # the plan lists what to change under the failing phase


def test_the_plan_names_the_accumulation_steps_that_fit(fake_hub, capsys, tmp_path):
    code, out, err = _check(capsys, tmp_path, "memagent_qwen3_1.7b.yaml", "trainer.gradient_accumulation_steps=96")
    assert code == 2 and "trainer.gradient_accumulation_steps=128" in err


def test_train_refuses_a_plan_that_cannot_fit_before_loading_anything(tmp_path, monkeypatch, capsys):
    """On a (faked) CUDA device with a 256 MiB GPU, `train` stops at the plan with its message, exit 2."""
    import memfactory_cli.models.loading as loading
    from memfactory_cli.workflows import common, planner, train

    for module in (loading, common, train):  # imported first, so no module keeps the fake after the test
        monkeypatch.setattr(module, "resolve_device", lambda requested: "cuda")
    monkeypatch.setattr(planner, "detected_gpu_memory", lambda: 2**28)
    loaded = []
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: loaded.append(a))
    recipe = str(ROOT / "recipes" / "memagent_tiny_cpu.yaml")
    environ = dict(os.environ)  # a (faked) CUDA run pins its GPU in the environment (workflows/launch.py)
    try:
        code = run_cli("train", recipe, *tiny_overrides(tmp_path / "run", **{"trainer.device": "auto", "trainer.bf16": "true"}))
    finally:
        os.environ.clear()
        os.environ.update(environ)
    err = capsys.readouterr().err
    assert code == 2 and "memory plan:" in err and "of 256 MiB" in err
    assert not loaded


def test_plan_problem_is_none_when_it_fits(fake_hub, tmp_path):
    from memfactory_cli.workflows.check import run_checks

    cfg = load_recipe(str(ROOT / "recipes" / "memagent_qwen3_1.7b.yaml"), DATA["memagent"] + [f"output.dir={tmp_path}/r"])
    report = run_checks(cfg, "train", gpu_memory=80 * 2**30)
    assert report.plan is not None and report.plan.fits
    with pytest.raises(UserError, match="memory plan: the update"):
        run_checks(cfg, "train", gpu_memory=40 * 2**30)


def test_a_sharded_launch_is_planned_but_not_refused(fake_hub, capsys, tmp_path):
    """The plan does not model ZeRO/FSDP sharding, so its per-process states are upper bounds there: no refusal."""
    code, out, err = _check(
        capsys, tmp_path, "memagent_qwen3_4b_instruct.yaml", "model.lora.enabled=false", "model.dtype=float32",
        "launch.num_processes=2", "launch.config_file=zero3", "trainer.gradient_accumulation_steps=192",
    )
    assert "DOES NOT FIT" in out and "sharding is not modelled" in out
    assert "memory plan:" not in err


def test_check_rejects_flash_attention_on_fp32_without_autocast(fake_hub, capsys, tmp_path):
    code, out, err = _check(
        capsys, tmp_path, "memagent_qwen3_1.7b.yaml", "model.attn_implementation=flash_attention_2", "trainer.bf16=false"
    )
    assert code == 2 and "needs half precision" in err
