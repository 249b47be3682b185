"""What a run leaves behind and shows: metrics.jsonl, rollouts.jsonl, curves.png, SwanLab (metrics and memory
traces as text), the progress bar, final/.

Switched-off outputs are null objects (``NullSink``, no SwanLab callback, no trace mirror), so the training code
never branches on logging settings.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from memfactory_cli.config import to_container
from memfactory_cli.config.schema import LoggingConfig, RecipeConfig
from memfactory_cli.errors import UserError
from memfactory_cli.io import append_jsonl, read_jsonl

RENAMES = {"reward": "reward/mean", "reward_std": "reward/std"}


class JsonlSink:
    """Append-only JSON lines, flushed per line, so a crash never leaves a half-written record behind."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, [record])


class RolloutSink:
    """Writes ``samples`` trajectories per step (question, chunks read, memory after each, answer, rewards), and
    hands the same records to each mirror (``SwanLabTraces``)."""

    def __init__(self, path: Path, samples: int, seed: int = 0, mirrors: list[Any] | None = None):
        self.sink = JsonlSink(path)
        self.samples = samples
        self.seed = seed
        self.mirrors = list(mirrors or [])

    def write(self, step: int, trajectories: list[Any]) -> None:
        rng = random.Random(self.seed * 1_000_003 + step)  # seeded per step: a resumed run picks the same samples
        picked = rng.sample(range(len(trajectories)), min(self.samples, len(trajectories)))
        records = [{"step": step, "slot": i, **trajectories[i].to_record()} for i in sorted(picked)]
        for record in records:
            self.sink.append(record)
        for mirror in self.mirrors:
            mirror.write(step, records)


class SwanLabTraces:
    """The sampled memory traces as ``swanlab.Text`` (``report.trace_text``), one per trajectory under
    ``memory_traces``, so SwanLab's dashboard shows them beside the charts. Logs only while a SwanLab run is open
    (the SwanLab callback opens it at train begin)."""

    def write(self, step: int, records: list[dict[str, Any]]) -> None:
        import swanlab

        from memfactory_cli.report import trace_text

        if records and swanlab.has_run():
            texts = [swanlab.Text(trace_text(r), caption=f"step {step} · slot {r['slot']} · question {r.get('id')}") for r in records]
            swanlab.log({"memory_traces": texts}, step=step)


class NullSink:
    def write(self, step: int, trajectories: list[Any]) -> None:
        pass


class MetricsCallback(TrainerCallback):
    """One ``metrics.jsonl`` line per logged step, with memfactory's metric names."""

    def __init__(self, path: Path):
        self.sink = JsonlSink(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        record: dict[str, Any] = {"step": state.global_step}
        for key, value in logs.items():
            if isinstance(value, float) and math.isnan(value):
                value = None
            record[RENAMES.get(key, key)] = value
        self.sink.append(record)


class Curves:
    """``curves.png`` redrawn from ``metrics.jsonl`` (so a resumed run's picture has its earlier steps too). A
    plotting error is one warning line on stderr (once per distinct error), never the end of the run.

    A redraw takes about 0.6 s of the main process. So that it never costs a fast run more than ``budget`` of its
    time, a redraw is skipped while less than ``last draw time / budget`` has passed since the last one (at 5%: 12 s
    after a 0.6 s draw); ``draw(force=True)`` (the end of training) always draws.
    """

    def __init__(self, metrics: Path, png: Path, budget: float = 0.05, clock: Callable[[], float] = time.monotonic):
        self.metrics = metrics
        self.png = png
        self.budget = budget
        self.clock = clock
        self.next_at = -math.inf
        self.warned: set[str] = set()

    def draw(self, force: bool = False) -> None:
        from memfactory_cli.report.curves import plot_curves

        start = self.clock()
        if not force and start < self.next_at:
            return
        try:
            plot_curves(read_jsonl(self.metrics, torn_tail="drop") if self.metrics.is_file() else [], self.png)
        except Exception as exc:  # noqa: BLE001 - the picture is a convenience; training goes on
            message = f"{type(exc).__name__}: {exc}"
            if message not in self.warned:
                self.warned.add(message)
                print(f"warning: could not draw {self.png}: {message}", file=sys.stderr)
        end = self.clock()
        self.next_at = end + (end - start) / self.budget


class CurvesCallback(TrainerCallback):
    """:class:`Curves` at every logged step (within its time budget) and at the end, on the main process. Must
    come after ``MetricsCallback``, whose line it draws."""

    def __init__(self, metrics: Path, png: Path):
        self.curves = Curves(metrics, png)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            self.curves.draw()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.curves.draw(force=True)


class ProgressCallback(TrainerCallback):
    """A rich progress bar with the last step's phase timings and reward."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}")
        )
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="generating…")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.task is None or not logs or "loss" not in logs:
            return

        def fmt(key: str) -> str:
            value = logs.get(key)
            return "-" if value is None else f"{value:.1f}s"

        reward = logs.get("reward")
        info = (
            f"gen {fmt('time/generate_s')} · reward {fmt('time/reward_s')} · update {fmt('time/update_s')}"
            f" · R {reward if reward is None else f'{reward:.3f}'} · rows {int(logs.get('rows', 0))}"
        )
        self.progress.update(self.task, completed=state.global_step, info=info)

    def on_train_end(self, args, state, control, **kwargs):
        if self.task is not None:
            self.progress.stop()


def _swanlab_mode(mode: str) -> str | None:
    """SwanLab's mode for ``logging.swanlab`` (None: disabled); ``cloud`` needs the API key in the environment."""
    if mode == "disabled":
        return None
    if mode == "cloud" and not os.environ.get("SWANLAB_API_KEY"):
        raise UserError("logging.swanlab=cloud needs the SWANLAB_API_KEY environment variable; use offline instead")
    return "online" if mode == "cloud" else "offline"


def swanlab_callbacks(mode: str, project: str, experiment: str, log_dir: Path, config: dict[str, Any]) -> list[Any]:
    """SwanLab through its own callback (transformers' ``report_to="swanlab"`` is broken with these versions).

    ``offline`` writes ``<run>/swanlog`` and never touches the network; ``cloud`` needs ``SWANLAB_API_KEY`` and
    never falls back to an interactive login; ``disabled`` returns no callback at all.
    """
    swan_mode = _swanlab_mode(mode)
    if swan_mode is None:
        return []
    from swanlab.integration.transformers import SwanLabCallback

    callback = SwanLabCallback(project=project, experiment_name=experiment, mode=swan_mode, log_dir=str(log_dir))
    callback.update_config({"recipe": config})
    return [callback]


def swanlab_run(logging: LoggingConfig, run_dir: Path, cfg: RecipeConfig) -> Any:
    """A SwanLab run for a loop outside the HF Trainer (``trainer/reinforce.py``), or None when disabled."""
    swan_mode = _swanlab_mode(logging.swanlab)
    if swan_mode is None:
        return None
    import swanlab

    return swanlab.init(
        project=logging.project, name=logging.experiment or run_dir.name, mode=swan_mode,
        log_dir=str(run_dir / "swanlog"), config={"recipe": to_container(cfg)},
    )


def finish_swanlab(mode: str) -> None:
    """Close the SwanLab run the callback opened (also after an error), so its files are complete."""
    if mode == "disabled":
        return
    import swanlab

    if swanlab.has_run():
        swanlab.finish()


class InterruptCallback(TrainerCallback):
    """After an interrupt (``checkpoints.interrupt_guard``), save a checkpoint at the next generation boundary, stop.

    Every process takes the largest signal seen on any process, so all of them stop at the same step.
    """

    def __init__(self, state: Any, accelerator: Any, at_boundary: Callable[[], bool]):
        self.interrupt = state
        self.accelerator = accelerator
        self.at_boundary = at_boundary

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        local = torch.tensor([self.interrupt.signum or 0], device=self.accelerator.device)
        signum = int(self.accelerator.gather(local).max())
        if signum and self.at_boundary():
            self.interrupt.signum = signum
            self.interrupt.checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            control.should_save = True
            control.should_training_stop = True
        return control
