"""curves.png: a training run's metrics.jsonl as pictures, one panel per question a run is looked at for.

Reward mean with its spread (± the within-step std), the mean of each reward function, the share of groups whose
rewards all agree (no GRPO signal), answer retention, and the seconds each phase took per step. A metric a step did
not log (``null``: undefined, e.g. retention when no document showed its answer) is a gap, never a zero.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from memfactory_cli.io import atomic_path

_REWARD = re.compile(r"^rewards/(.+)/mean$")
PHASES = ("time/generate_s", "time/reward_s", "time/update_s")
LABELS = {"retention/final": "final memory holds a seen answer", "retention/seen": "document showed the answer"}


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric, a step without a number being NaN (a gap in the line)."""
    steps = [float(r["step"]) for r in records]
    values = [float(v) if isinstance(v := r.get(key), (int, float)) else math.nan for r in records]
    return steps, values


def _has(records: list[dict[str, Any]], key: str) -> bool:
    return any(isinstance(r.get(key), (int, float)) for r in records)


def panels(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Panel title -> the metric names it draws (only metrics some step logged; panels with none are left out)."""
    rewards = sorted({m.group(0) for r in records for k in r if (m := _REWARD.match(k))})
    retention = ["retention/final", "retention/seen"]
    wanted = {
        "reward (mean ± std)": ["reward/mean"],
        "reward functions (mean)": rewards,
        "groups with zero reward std": ["frac_reward_zero_std"],
        "answer retention": retention,
        "reranker reward (RMM)": ["reranker/reward"],
        "answers of the training rollouts": ["answer/em", "answer/f1"],
        "seconds per step": list(PHASES),
        "loss": ["loss"],
    }
    return {title: keys for title, names in wanted.items() if (keys := [k for k in names if _has(records, k)])}


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Draw ``records`` (metrics.jsonl lines) into ``path`` as a PNG, atomically (the old picture or the new)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = sorted((r for r in records if isinstance(r.get("step"), (int, float))), key=lambda r: r["step"])
    chosen = panels(records)
    cols = 3
    rows = max(1, -(-len(chosen) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, chosen.items()):
        for key in keys:
            steps, values = _series(records, key)
            label = LABELS.get(key) or key.removeprefix("rewards/").removesuffix("/mean").removeprefix("time/").removeprefix("retention/")
            ax.plot(steps, values, marker="o", markersize=3, label=label)
            if key == "reward/mean" and _has(records, "reward/std"):
                _, std = _series(records, "reward/std")
                ax.fill_between(steps, [m - s for m, s in zip(values, std)], [m + s for m, s in zip(values, std)], alpha=0.25)
        if title in ("groups with zero reward std", "answer retention"):
            ax.set_ylim(-0.05, 1.05)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(keys) > 1 or title == "answer retention":
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    if not chosen:
        axes[0][0].text(0.5, 0.5, "no metrics logged yet", ha="center", va="center")
    fig.suptitle(f"{path.parent.name}: {len(records)} logged steps", fontsize=11)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
