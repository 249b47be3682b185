"""The summary plot: score by set and metric per model, and score against context length when a set family
(``eval_fwe_<len>``, ``eval_<N>``) was evaluated at several lengths."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from memfactory_cli.report.summary import primary_metric


def family(set_name: str) -> str:
    """``eval_fwe_16384`` -> ``eval_fwe``: sets that differ only by their length suffix."""
    return re.sub(r"_?\d+$", "", Path(set_name).stem)


def length_series(entries: list[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[float, float, float]]]:
    """(family, model) -> [(context tokens, mean, stderr)] of the primary metric, for families with >= 2 lengths."""
    series: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for e in entries:
        stats = e["metrics"].get(primary_metric(e["metrics"]))
        if stats is not None:
            series.setdefault((family(e["set"]), e["model"]), []).append((e.get("context_tokens", 0.0), stats["mean"], stats["stderr"]))
    return {key: sorted(points) for key, points in series.items() if len({p[0] for p in points}) >= 2}


def plot(entries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = list(dict.fromkeys((e["set"], m) for e in entries for m in e["metrics"]))
    models = list(dict.fromkeys(e["model"] for e in entries))
    by_key = {(e["set"], e["model"]): e for e in entries}
    lengths = length_series(entries)
    fig, axes = plt.subplots(1, 2 if lengths else 1, figsize=(12 if lengths else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        xs, means, errs = [], [], []
        for j, (set_name, metric) in enumerate(bars):
            stats = by_key.get((set_name, model), {}).get("metrics", {}).get(metric)
            if stats is not None:
                xs.append(j + (i - (len(models) - 1) / 2) * width)
                means.append(stats["mean"])
                errs.append(stats["stderr"])
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=model)
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([f"{s}\n{m}" for s, m in bars], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"avg@{entries[0]['k']} (± stderr)" if entries else "score")
    ax.set_title("score by set and metric")
    ax.legend(fontsize=8)
    if lengths:
        ax = axes[0][1]
        for (fam, model), points in lengths.items():
            xs, means, errs = zip(*points)
            ax.errorbar(xs, means, yerr=errs, marker="o", capsize=3, label=f"{fam} · {model}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("context tokens (mean per set)")
        ax.set_title("primary metric against context length")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
