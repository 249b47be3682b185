"""Resume is exact: a run killed (SIGKILL) or interrupted (SIGINT/SIGTERM) and resumed ends with the weights of an
uninterrupted run, and its metrics.jsonl holds every step exactly once.

The tiny recipe is chosen to hit the hard cases: ``num_iterations=2`` (two optimizer steps share one generation, a
buffer TRL does not checkpoint) and 3 training questions with 2 per step (one generation per epoch, so the resume
at step 2 starts a new epoch, whose data order TRL's sampler would otherwise replay from epoch 0).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from memfactory_cli.trainer.checkpoints import latest_checkpoint, resolve_resume, truncate_jsonl
from tests.conftest import ROOT, run_cli, tiny_overrides

RECIPE = "recipes/memagent_tiny_cpu.yaml"


def overrides(out: Path, **extra: str) -> list[str]:
    return tiny_overrides(
        out,
        **{
            "agent.modules.memory.max_chunks": "1",
            "data.synth.n_train": "3",
            "trainer.max_steps": "4",
            "trainer.save_steps": "2",
            "trainer.num_iterations": "2",
            "trainer.learning_rate": "1e-2",
            "output.keep_last": "1",
            "logging.rollout_samples": "2",
            "rewards": "[{name: 'tests.helpers:signalling_length_reward'}]",
            **extra,
        },
    )


def cli_subprocess(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"{prelude}\nfrom memfactory_cli.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def steps(run: Path, name: str = "metrics.jsonl") -> list[int]:
    return [json.loads(line)["step"] for line in (run / name).read_text().splitlines()]


def max_abs_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    assert run_cli("train", RECIPE, *overrides(out)) == 0
    return out


def test_uninterrupted_run_keeps_only_the_last_checkpoint_and_trains(reference):
    assert sorted(p.name for p in reference.glob("checkpoint-*")) == ["checkpoint-4"], "output.keep_last=1"
    assert not list(reference.glob(".checkpoint-*")), "no staging folder is left behind"
    assert steps(reference) == [1, 2, 3, 4]
    assert max_abs_diff(reference / "checkpoint-4", reference / "final") == 0.0
    assert max_abs_diff(reference / "final", Path(os.environ["MEMFACTORY_CACHE"]) / "tiny-qwen3-bpe") > 1e-3


# Kill the process while it saves checkpoint-4: after step 4 is logged and the checkpoint is fully written to its
# staging folder, but before the rename. checkpoint-2 is the newest complete checkpoint.
KILL_BEFORE_RENAME = """
import os, signal
import memfactory_cli.trainer.grpo as grpo
rename = grpo.replace_dir
def killing_rename(src, dst):
    if dst.name == "checkpoint-4":
        os.kill(os.getpid(), signal.SIGKILL)
    rename(src, dst)
grpo.replace_dir = killing_rename
"""


def test_sigkill_then_resume_auto_equals_the_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "run"
    killed = cli_subprocess("train", RECIPE, *overrides(out), prelude=KILL_BEFORE_RENAME)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert steps(out) == [1, 2, 3, 4], "step 4 was logged before its checkpoint was renamed"
    assert (out / ".checkpoint-4.tmp" / "checkpoint-4" / "optimizer.pt").exists()
    assert latest_checkpoint(out) == out / "checkpoint-2", "auto ignores the unrenamed checkpoint-4"

    assert run_cli("train", RECIPE, *overrides(out), "--resume", "auto") == 0
    assert steps(out) == [1, 2, 3, 4], "each step exactly once: 3 and 4 were cut and logged again"
    assert sorted({s for s in steps(out, "rollouts.jsonl")}) == [1, 3]
    assert [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()] == [
        json.loads(x) for x in (reference / "rollouts.jsonl").read_text().splitlines()
    ], "the same rollouts were sampled and logged"
    assert not list(out.glob(".checkpoint-*"))
    diff = max_abs_diff(reference / "final", out / "final")
    assert diff <= 1e-6, diff


@pytest.mark.parametrize("signame,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_saves_a_checkpoint_at_the_next_safe_point_and_says_how_to_resume(
    signame, code, reference, tmp_path, monkeypatch, capsys
):
    """The signal is sent to this process from inside the step-1 reward (a real signal, at a known step); step 2
    reuses step 1's generation, so the checkpoint comes after step 2."""
    import tests.helpers

    out = tmp_path / "run"
    monkeypatch.setattr(tests.helpers, "_calls", 0)
    monkeypatch.setenv("MF_TEST_SIGNAL", f"1:{signame}")
    handler = signal.getsignal(getattr(signal, signame))
    assert run_cli("train", RECIPE, *overrides(out)) == code
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert f"checkpoint saved at {out / 'checkpoint-2'}" in last and "resume with: memfactory train" in last
    assert last.endswith("--resume auto")
    assert signal.getsignal(getattr(signal, signame)) is handler, "the previous handler is back after training"
    assert resolve_resume("auto", out) == out / "checkpoint-2"
    assert steps(out) == [1, 2] and not (out / "final").exists()
    if signame == "SIGINT":
        monkeypatch.delenv("MF_TEST_SIGNAL")
        assert run_cli("train", RECIPE, *overrides(out), "--resume", str(out / "checkpoint-2")) == 0
        assert steps(out) == [1, 2, 3, 4]
        assert max_abs_diff(reference / "final", out / "final") <= 1e-6


def _fake_checkpoint(path: Path, step: int, complete: bool = True) -> Path:
    path.mkdir(parents=True)
    names = ["trainer_state.json", "optimizer.pt", "scheduler.pt", "model.safetensors", "rng_state.pth"]
    for name in names if complete else names[:1]:
        (path / name).write_text(json.dumps({"global_step": step}) if name == "trainer_state.json" else "x")
    return path


def test_auto_picks_the_newest_complete_checkpoint(tmp_path):
    _fake_checkpoint(tmp_path / "checkpoint-2", 2)
    _fake_checkpoint(tmp_path / "checkpoint-10", 10)
    _fake_checkpoint(tmp_path / "checkpoint-12", 12, complete=False)
    _fake_checkpoint(tmp_path / ".checkpoint-14.tmp" / "checkpoint-14", 14)
    assert resolve_resume("auto", tmp_path) == tmp_path / "checkpoint-10", "10 > 2 numerically, 12 is partial"
    assert resolve_resume("auto", tmp_path / "empty") is None


def test_truncate_jsonl_cuts_later_steps_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    truncate_jsonl(path, 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_resume_refuses_a_changed_recipe_but_allows_more_steps(reference, tmp_path):
    from memfactory_cli.config import load_recipe
    from memfactory_cli.workflows.resume import resume_problems

    ok, checkpoint = resume_problems(load_recipe(RECIPE, overrides(reference, **{"trainer.max_steps": "8"})), "auto")
    assert ok == [] and checkpoint == reference / "checkpoint-4"
    bad, _ = resume_problems(load_recipe(RECIPE, overrides(reference, **{"trainer.learning_rate": "1e-3"})), "auto")
    assert len(bad) == 1 and "trainer.learning_rate" in bad[0]
    fresh, _ = resume_problems(load_recipe(RECIPE, overrides(reference)), None)
    assert len(fresh) == 1 and "already holds checkpoints" in fresh[0] and "--resume auto" in fresh[0]


def _write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _sharded_checkpoint(path: Path, layout: str, step: int = 2) -> Path:
    """The files transformers writes under each sharded kind of run (names from Trainer._save_checkpoint)."""
    _write(path / "trainer_state.json", json.dumps({"global_step": step}))
    for rank in (0, 1):
        _write(path / f"rng_state_{rank}.pth")
    if layout == "deepspeed-zero3":  # no gathered 16-bit model: the weights live in the shards only
        _write(path / "latest", f"global_step{step}\n")
        for rank in (0, 1):
            _write(path / f"global_step{step}" / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
            _write(path / f"global_step{step}" / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    elif layout == "fsdp-full":
        for name in ("pytorch_model_fsdp.bin", "optimizer.bin", "scheduler.pt"):
            _write(path / name)
    elif layout == "fsdp-sharded":
        _write(path / "pytorch_model_fsdp_0" / "__0_0.distcp")
        _write(path / "optimizer_0" / "__0_0.distcp")
        _write(path / "scheduler.pt")
    return path


@pytest.mark.parametrize(
    "layout,kind", [("deepspeed-zero3", "deepspeed"), ("fsdp-full", "fsdp"), ("fsdp-sharded", "fsdp")]
)
def test_sharded_checkpoints_are_complete_and_found_by_auto(tmp_path, layout, kind):
    from memfactory_cli.trainer.checkpoints import checkpoint_problem, optimizer_layout

    path = _sharded_checkpoint(tmp_path / "checkpoint-2", layout)
    assert checkpoint_problem(path) is None and optimizer_layout(path) == kind
    assert resolve_resume("auto", tmp_path) == path


def test_a_deepspeed_checkpoint_whose_shards_are_missing_is_incomplete(tmp_path):
    from memfactory_cli.trainer.checkpoints import checkpoint_problem

    path = _sharded_checkpoint(tmp_path / "checkpoint-2", "deepspeed-zero3")
    for shard in (path / "global_step2").glob("*optim_states.pt"):
        shard.unlink()
    assert "missing optimizer state" in checkpoint_problem(path)


def test_resume_auto_over_only_incomplete_checkpoints_is_an_error_not_a_fresh_start(tmp_path):
    from memfactory_cli.config import load_recipe
    from memfactory_cli.workflows.resume import resume_problems

    cfg = load_recipe(RECIPE, overrides(tmp_path))
    assert resume_problems(cfg, "auto") == ([], None), "nothing saved yet: starting at step 0 is right"
    _fake_checkpoint(tmp_path / "checkpoint-4", 4, complete=False)
    problems, checkpoint = resume_problems(cfg, "auto")
    assert checkpoint is None and len(problems) == 1
    assert "no complete checkpoint" in problems[0] and "checkpoint-4 is not a complete checkpoint" in problems[0]
    assert run_cli("train", RECIPE, *overrides(tmp_path), "--resume", "auto") == 2
