"""summary.json and summary.md: one entry per (set, model), and a MemFactory Table-2 style comparison."""

from __future__ import annotations

import json
from typing import Any

from memfactory_cli.report.retention import describe as describe_retention

# The headline metric of a set: the judge when there is one (MemFactory's choice), RULER's score for RULER sets,
# else sub-EM (what MemAgent's published accuracies are, inferred).
PRIMARY_ORDER = ("judge", "string_match_all", "sub_em", "f1", "em")


def primary_metric(metrics: dict[str, Any]) -> str:
    return next((m for m in PRIMARY_ORDER if m in metrics), next(iter(metrics), ""))


def to_json(entries: list[dict[str, Any]]) -> str:
    return json.dumps(entries, indent=2) + "\n"


def _cell(stats: dict[str, float] | None) -> str:
    return "-" if stats is None else f"{stats['mean']:.4f} ± {stats['stderr']:.4f}"


def comparison(entries: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the models x sets table of each set's primary metric, with an Avg column."""
    sets = list(dict.fromkeys(e["set"] for e in entries))
    models = list(dict.fromkeys(e["model"] for e in entries))
    by_key = {(e["set"], e["model"]): e for e in entries}
    header = ["model", *[f"{s} ({primary_metric(next(e for e in entries if e['set'] == s)['metrics'])})" for s in sets]]
    if len(sets) > 1:
        header.append("Avg")
    rows = []
    for model in models:
        cells, means = [model], []
        for s in sets:
            e = by_key.get((s, model))
            stats = e["metrics"].get(primary_metric(e["metrics"])) if e else None
            cells.append(_cell(stats))
            if stats is not None:
                means.append(stats["mean"])
        if len(sets) > 1:
            cells.append(f"{sum(means) / len(means):.4f}" if len(means) == len(sets) else "-")
        rows.append(cells)
    return header, rows


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _retention_row(entry: dict[str, Any]) -> list[str]:
    r = entry["retention"]
    return [
        entry["set"],
        entry["model"],
        _share(r["final"]),
        f"{r['seen']} / {r['trajectories']}",
        ", ".join(f"{p['chunk']}: {p['n']}" for p in r["first_seen"]) or "-",
        ", ".join(f"{p['chunk']}: {_share(p['held'])}" for p in r["per_chunk"]) or "-",
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(entries: list[dict[str, Any]]) -> str:
    """The comparison table, then every metric of every (set, model) with n, k and context length."""
    if not entries:
        return "# Evaluation\n\nNo results yet.\n"
    k = entries[0]["k"]
    parts = [
        "# Evaluation",
        f"avg@{k}: the mean over questions of the mean over {k} samples; ± is the standard error over questions.",
        _table(*comparison(entries)),
        "## All metrics",
    ]
    detail = []
    for e in entries:
        for name, stats in e["metrics"].items():
            detail.append([e["set"], e["model"], name, _cell(stats), str(e["n"]), str(e["k"]), f"{e.get('context_tokens', 0):.0f}"])
    parts.append(_table(["set", "model", "metric", "avg@k ± stderr", "n", "k", "context tokens (mean)"], detail))
    grouped = [
        [e["set"], e["model"], f"{e['by_group']['by']}={g}", name, _cell(stats), str(part["n"])]
        for e in entries
        if e.get("by_group")
        for g, part in e["by_group"]["groups"].items()
        for name, stats in part["metrics"].items()
    ]
    if grouped:
        parts += ["## By group", _table(["set", "model", "group", "metric", "avg@k ± stderr", "n"], grouped)]
    retained = [e for e in entries if e.get("retention")]
    if retained:
        parts += [
            "## Answer retention",
            "Of the trajectories whose document showed a reference answer (normalised, whole words), the share whose "
            "memory still holds one: at the end (final) and after each chunk k, counting those that had seen it by k.",
            _table(["set", "model", "final", "seen / trajectories", "first seen (chunk: n)", "held after chunk k"], [_retention_row(e) for e in retained]),
        ]
    sampling = entries[0].get("sampling")
    if sampling:
        parts.append("Sampling: " + ", ".join(f"{key}={value}" for key, value in sampling.items()))
    return "\n\n".join(parts) + "\n"


def before_after_table(before: dict[str, Any], after: dict[str, Any], deltas: dict[str, Any]) -> str:
    """Print the held-out before/after table of a training run (mean ± stderr, paired delta); returns its text."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"held-out, n={before['n']}, greedy")
    for col in ("metric", "before", "after", "Δ (paired)"):
        table.add_column(col)
    for m, d in deltas.items():
        b, a = before["metrics"][m], after["metrics"][m]
        table.add_row(
            m, f"{b['mean']:.3f} ± {b['stderr']:.3f}", f"{a['mean']:.3f} ± {a['stderr']:.3f}", f"{d['mean']:+.3f} ± {d['stderr']:.3f}"
        )
    rb, ra = before.get("retention"), after.get("retention")
    if rb or ra:  # answer retention (report.retention): seen answers still in the final memory
        finals = [None if r is None else r["final"] for r in (rb, ra)]
        change = "-" if None in finals else f"{finals[1] - finals[0]:+.3f} (unpaired)"
        table.add_row("retention (final)", describe_retention(rb), describe_retention(ra), change)
    console = Console()
    console.print(table)
    with console.capture() as cap:
        console.print(table)
    return cap.get()
