"""Answer retention: where the document showed a reference answer, and whether the memory kept it.

Read from what a rollout already records (``chunks``: the text each memory step read, ``memories``: the memory
after each step, ``answers``: the references), never from a second pass over the model:

- a trajectory has *seen* a reference by chunk k when one of chunks 1..k contains it (normalised, whole words:
  ``rewards.qa.reference_spans``);
- its memory *holds* it after chunk k when the memory after chunk k contains it;
- retention at chunk k is the share of trajectories that had seen a reference by chunk k whose memory holds one
  after chunk k; the run's one number, ``final``, is that share for the final memory (what the answer is read from).

A Memory-R1 manager trajectory reads one dialogue turn and leaves a bank of entries: its single step is the turn
and the whole bank after the manager's operations. Records without chunks or without references (RMM, Memory-R1
answer trajectories, unlabelled infer runs) have no retention and are left out, never counted as zero.

Counts (``counts`` / ``merge``) rather than shares are what processes and steps combine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from memfactory_cli.rewards.qa import holds_reference


def memory_steps(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(text read, memory after it) for each memory step of a trajectory record; [] when it read no chunks.

    ``memories[k]`` is the memory after ``chunks[k]`` (MemAgent). With a single chunk the memory after it is all
    entries together (Memory-R1's bank), which is the same thing when there is one entry.
    """
    chunks = [str(c) for c in record.get("chunks") or []]
    memories = [str(m) for m in record.get("memories") or []]
    if len(chunks) == len(memories):
        return list(zip(chunks, memories))
    if len(chunks) == 1:
        return [(chunks[0], "\n".join(memories))]
    return []


@dataclass(frozen=True)
class Retention:
    """One trajectory's retention: which chunks contain a reference (1-based) and, per chunk, whether the memory
    after it holds one."""

    in_chunk: tuple[bool, ...]
    held: tuple[bool, ...]

    @property
    def seen_in(self) -> list[int]:
        return [k for k, hit in enumerate(self.in_chunk, 1) if hit]

    @property
    def first_seen(self) -> int | None:
        return next(iter(self.seen_in), None)

    def seen_by(self, k: int) -> bool:
        return self.first_seen is not None and self.first_seen <= k

    @property
    def dropped_at(self) -> list[int]:
        """Chunks after which a reference the memory held before is gone."""
        return [k for k in range(2, len(self.held) + 1) if self.held[k - 2] and not self.held[k - 1]]

    @property
    def not_kept_at(self) -> list[int]:
        """Chunks that contain a reference the memory neither held before nor holds after reading them."""
        return [k for k in self.seen_in if not self.held[k - 1] and not (k > 1 and self.held[k - 2])]

    @property
    def final(self) -> bool | None:
        """Whether the final memory holds a reference; None when the document never showed one."""
        return None if self.first_seen is None else self.held[-1]


def retention(record: dict[str, Any]) -> Retention | None:
    """The retention of one trajectory record, or None (no chunks recorded, or no reference answers)."""
    references = [str(a) for a in record.get("answers") or [] if str(a).strip()]
    steps = memory_steps(record)
    if not references or not steps:
        return None
    return Retention(
        tuple(holds_reference(chunk, references) for chunk, _ in steps),
        tuple(holds_reference(memory, references) for _, memory in steps),
    )


def counts(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mergeable counts over records: trajectories with retention, those that saw a reference, their final
    memories holding one, first-seen chunks, and per chunk k the seen-by-k and seen-and-held trajectories."""
    out: dict[str, Any] = {"trajectories": 0, "seen": 0, "final_held": 0, "first_seen": Counter(), "seen_by": Counter(), "held": Counter()}
    for r in filter(None, map(retention, records)):
        out["trajectories"] += 1
        if r.first_seen is None:
            continue
        out["seen"] += 1
        out["final_held"] += bool(r.final)
        out["first_seen"][r.first_seen] += 1
        for k in range(r.first_seen, len(r.held) + 1):
            out["seen_by"][k] += 1
            out["held"][k] += r.held[k - 1]
    return out


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"trajectories": 0, "seen": 0, "final_held": 0, "first_seen": Counter(), "seen_by": Counter(), "held": Counter()}
    for part in parts:
        for key, value in part.items():
            out[key] = out[key] + (Counter(value) if isinstance(value, dict) else value)
    return out


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


def summarise(c: dict[str, Any]) -> dict[str, Any] | None:
    """The retention summary of merged counts; None when no trajectory had retention (nothing to say, not 0)."""
    if not c["trajectories"]:
        return None
    chunks = sorted(c["seen_by"])
    return {
        "trajectories": c["trajectories"],
        "seen": c["seen"],
        "seen_share": c["seen"] / c["trajectories"],
        "final": _share(c["final_held"], c["seen"]),
        "first_seen": [{"chunk": int(k), "n": c["first_seen"][k]} for k in sorted(c["first_seen"])],  # lists: JSON-stable
        "per_chunk": [{"chunk": int(k), "n": c["seen_by"][k], "held": _share(c["held"][k], c["seen_by"][k])} for k in chunks],
    }


def summarise_records(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    return summarise(counts(records))


def as_metrics(summary: dict[str, Any] | None) -> dict[str, float]:
    """Flat metric names for a training step: ``retention/final``, ``retention/seen``, ``retention/chunk_<k>``.

    Undefined shares are NaN, which TRL's logger averages away and ``metrics.jsonl`` writes as null.
    """
    if summary is None:
        return {}
    nan = float("nan")
    metrics = {"retention/final": nan if summary["final"] is None else summary["final"], "retention/seen": summary["seen_share"]}
    for part in summary["per_chunk"]:
        metrics[f"retention/chunk_{part['chunk']}"] = nan if part["held"] is None else part["held"]
    return metrics


def describe(summary: dict[str, Any] | None) -> str:
    """A table cell: ``0.667 (6/8 seen)``: the final share, of how many trajectories whose document showed a
    reference (of all); ``-`` when there is no retention."""
    if summary is None:
        return "-"
    final = "-" if summary["final"] is None else f"{summary['final']:.3f}"
    return f"{final} ({summary['seen']}/{summary['trajectories']} seen)"
