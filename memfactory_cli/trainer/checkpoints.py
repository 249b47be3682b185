"""Checkpoints a run can always resume from, logs that continue without duplicates, and interrupts that save first.

The HF Trainer's own ``resume_from_checkpoint`` restores the model, optimizer, scheduler, RNG states, data position
and step; this module adds what it lacks:

- a checkpoint folder appears only when complete (``MemGRPOTrainer`` saves it into a staging folder, then renames
  it), and :func:`latest_checkpoint` skips anything else, so ``--resume auto`` never picks a torn save;
- ``metrics.jsonl`` / ``rollouts.jsonl`` are cut back to the checkpoint's step on resume (:func:`truncate_jsonl`),
  so every step appears exactly once;
- SIGINT / SIGTERM set a flag (:func:`interrupt_guard`); ``callbacks.InterruptCallback`` saves a checkpoint at the next
  step after which TRL would generate afresh, and stops. Only there is a resume exact: TRL does not save its
  generation buffer (``steps_per_generation`` x ``num_iterations`` micro-batches share one generation), so a
  checkpoint inside a buffer would resume with a fresh generation where the uninterrupted run reused the old one.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memfactory_cli.errors import UserError

CHECKPOINT = re.compile(r"checkpoint-(\d+)")
# What a resumable checkpoint holds besides the weights and the optimizer (transformers' Trainer._save_checkpoint).
STATE_FILES = ("trainer_state.json",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")


def optimizer_layout(path: Path) -> str | None:
    """Who wrote the checkpoint's optimizer state (transformers' ``_save_optimizer_and_scheduler``), or None.

    ``torch``: ``optimizer.pt`` (one process, DDP); ``deepspeed``: ``latest`` naming a ``global_step*/`` folder of
    ``*optim_states.pt`` shards (ZeRO-1/2/3); ``fsdp``: ``optimizer*.bin`` (full state dict) or ``optimizer_N/``
    (sharded state dict).
    """
    if (path / "optimizer.pt").is_file():
        return "torch"
    latest = path / "latest"
    if latest.is_file():
        tag = latest.read_text(encoding="utf-8", errors="replace").strip()
        if tag and any((path / tag).glob("*optim_states.pt")):
            return "deepspeed"
    if any(path.glob("optimizer*.bin")) or any(d.is_dir() and any(d.iterdir()) for d in path.glob("optimizer_*")):
        return "fsdp"
    return None


def _has_weights(path: Path, layout: str | None) -> bool:
    if any((path / name).is_file() for name in WEIGHT_FILES):
        return True
    if layout == "fsdp":  # pytorch_model_fsdp.bin (full) or pytorch_model_fsdp_0/ (sharded)
        return any(path.glob("pytorch_model_fsdp*"))
    if layout == "deepspeed":  # ZeRO-3 without a gathered 16-bit model keeps the weights in its shards only
        tag = (path / "latest").read_text(encoding="utf-8", errors="replace").strip()
        return any((path / tag).glob("*model_states.pt"))
    return False


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete, resumable checkpoint folder, or None when it is."""
    if not path.is_dir():
        return "not a folder" if path.exists() else "does not exist"
    missing = [name for name in STATE_FILES if not (path / name).is_file()]
    layout = optimizer_layout(path)
    if layout is None:
        missing.append("optimizer state (optimizer.pt, DeepSpeed latest + global_step*/, or FSDP optimizer*)")
    elif layout != "deepspeed" and not (path / "scheduler.pt").is_file():  # DeepSpeed may keep it in its shards
        missing.append("scheduler.pt")
    if not _has_weights(path, layout):
        missing.append("model weights")
    if not any(path.glob("rng_state*.pth")):
        missing.append("rng_state.pth")
    if missing:
        return f"not a complete checkpoint (missing {', '.join(missing)})"
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return "not a complete checkpoint (unreadable trainer_state.json)"
    return None


def checkpoint_step(path: Path) -> int:
    return int(json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete ``checkpoint-N`` in ``run_dir``, oldest first; partial ones are skipped."""
    if not run_dir.is_dir():
        return []
    found = []
    for path in run_dir.iterdir():
        m = CHECKPOINT.fullmatch(path.name)
        if m and checkpoint_problem(path) is None:
            found.append((int(m.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1][1] if found else None


def resolve_resume(resume: str, run_dir: Path) -> Path | None:
    """``auto`` -> the newest complete checkpoint in ``run_dir`` (None: start fresh); else a checkpoint folder."""
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume).expanduser()
    problem = checkpoint_problem(path)
    if problem is not None:
        raise UserError(f"--resume {resume}: {problem}; give a checkpoint-N folder of a run, or --resume auto")
    return path


def staging_dir(run_dir: Path, step: int) -> Path:
    """Where checkpoint ``step`` is written before its rename (hidden, and not named ``checkpoint-N``)."""
    return run_dir / f".checkpoint-{step}.tmp"


def remove_staging(run_dir: Path) -> None:
    """Drop the hidden folders a killed save left behind (never renamed into place, so nothing refers to them)."""
    import shutil

    if run_dir.is_dir():
        for path in run_dir.glob(".checkpoint-*"):
            shutil.rmtree(path, ignore_errors=True)


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep the records with ``step <= last_step`` (and drop a torn last line), rewriting the file atomically."""
    from memfactory_cli.io import atomic_write_text

    if not path.exists():
        return
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    kept = []
    for line in complete.decode("utf-8", errors="replace").splitlines():
        try:
            if int(json.loads(line)["step"]) <= last_step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    if "".join(kept).encode("utf-8") != data:
        atomic_write_text(path, "".join(kept))


# -- interrupts --------------------------------------------------------------------------------------------------
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Interrupt:
    """The first SIGINT/SIGTERM received while training, and the checkpoint saved because of it."""

    signum: int | None = None
    checkpoint: Path | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)


@contextlib.contextmanager
def interrupt_guard() -> Iterator[Interrupt]:
    """While inside, SIGINT/SIGTERM only set a flag (a second one stops at once, without a checkpoint)."""
    from memfactory_cli.errors import Interrupted

    state = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handle(signum: int, frame: Any) -> None:
        if state.signum is not None:
            raise Interrupted(f"{signal.Signals(signum).name} again: stopped without saving a checkpoint", 128 + signum)
        state.signum = signum
        print(
            f"memfactory: {signal.Signals(signum).name} received: saving a checkpoint once the steps of the current "
            "generation are done (send it again to stop at once, without one)",
            file=sys.stderr,
            flush=True,
        )

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handle)
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class EpochSeededSampler:
    """TRL's ``RepeatSampler`` reseeded at every epoch with ``seed + epoch``.

    TRL seeds its sampler's generator once, so epoch e's order depends on the e-1 shuffles before it, which a
    resumed run never made: resuming at a later epoch replayed epoch 0's order. transformers calls ``set_epoch``
    before each epoch (through accelerate's data loader), resumed or not, so here the order depends on the epoch only.
    """

    def __init__(self, inner: Any):
        self.inner = inner
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[int]:
        generator, seed = getattr(self.inner, "generator", None), getattr(self.inner, "seed", None)
        if generator is not None and seed is not None:
            generator.manual_seed(seed + self.epoch)
        return iter(self.inner)
