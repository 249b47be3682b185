"""What ``train --resume`` decides before training: which checkpoint, whether the recipe still matches, what to cut.

The checkpoint itself is restored by transformers (``trainer.train(resume_from_checkpoint=...)``); this module keeps
the run directory consistent around it: the same recipe, logs cut back to the checkpoint's step, no checkpoints
from an abandoned later timeline that ``--resume auto`` could pick up afterwards.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from memfactory_cli.config import RecipeConfig, load_recipe, to_yaml
from memfactory_cli.errors import UserError
from memfactory_cli.io import atomic_write_text
from memfactory_cli.trainer.checkpoints import (
    CHECKPOINT,
    checkpoint_problem,
    checkpoint_step,
    complete_checkpoints,
    remove_staging,
    resolve_resume,
    truncate_jsonl,
)

LOGS = ("metrics.jsonl", "rollouts.jsonl")
FRESH_RUN_STALE = (*LOGS, "eval_before.json", "eval_before_after.json")
# Settings a resumed run may change: how long it runs, what it logs and where its processes meet, not what it learns.
RESUMABLE_CHANGES = (
    "trainer.max_steps",
    "trainer.save_steps",
    "trainer.eval_before_after",
    "output.keep_last",
    "logging.",
    "launch.main_process_port",
)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def changed_settings(saved: RecipeConfig, now: RecipeConfig) -> list[str]:
    """Keys whose values differ between two recipes, leaving out the ones a resume may change."""
    from omegaconf import OmegaConf

    a = _flat(OmegaConf.to_container(OmegaConf.structured(saved)))
    b = _flat(OmegaConf.to_container(OmegaConf.structured(now)))
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return [k for k in keys if not k.startswith(RESUMABLE_CHANGES)]


def resume_problems(cfg: RecipeConfig, resume: str | None) -> tuple[list[str], Path | None]:
    """Problems with ``--resume`` (or with starting fresh over a run), and the checkpoint to resume from."""
    run_dir = Path(cfg.output.dir)
    existing = sorted((int(m.group(1)), p) for p in _entries(run_dir) if (m := CHECKPOINT.fullmatch(p.name)))
    if resume is None:
        if existing:
            return [
                f"output.dir {run_dir} already holds checkpoints (newest {existing[-1][1].name}); continue that run with "
                "--resume auto, or choose another output.dir"
            ], None
        return [], None
    try:
        checkpoint = resolve_resume(resume, run_dir)
    except UserError as exc:
        return [str(exc)], None
    if checkpoint is None:
        if existing:  # starting again at step 0 would silently throw those steps away
            newest = existing[-1][1]
            return [
                f"--resume auto: no complete checkpoint in {run_dir}, though it holds {len(existing)} checkpoint "
                f"folder(s): {newest.name} is {checkpoint_problem(newest)}; resume from a complete one with "
                "--resume PATH, or choose another output.dir"
            ], None
        return [], None
    saved = checkpoint.parent / "config.yaml"
    if saved.is_file():
        try:
            changed = changed_settings(load_recipe(saved), cfg)
        except UserError as exc:
            return [f"--resume: cannot read the run's recipe: {exc}"], checkpoint
        if changed:
            return [
                f"--resume: the recipe differs from the one {checkpoint.parent} was trained with in "
                f"{', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}; only trainer.max_steps, "
                "trainer.save_steps, output.keep_last, logging.* and launch.main_process_port may change on resume"
            ], checkpoint
    return [], checkpoint


def _entries(run_dir: Path) -> list[Path]:
    return list(run_dir.iterdir()) if run_dir.is_dir() else []


def prepare_run_dir(run_dir: Path, cfg: RecipeConfig, checkpoint: Path | None) -> None:
    """Write the recipe and make the logs match where training starts: empty, or cut back to the checkpoint."""
    remove_staging(run_dir)
    if checkpoint is None:
        for stale in FRESH_RUN_STALE:
            (run_dir / stale).unlink(missing_ok=True)
    else:
        step = checkpoint_step(checkpoint)
        for name in LOGS:
            truncate_jsonl(run_dir / name, step)
        for later, path in complete_checkpoints(run_dir):
            if later > step:  # a later timeline this resume abandons; `--resume auto` must not come back to it
                shutil.rmtree(path, ignore_errors=True)
    atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))

