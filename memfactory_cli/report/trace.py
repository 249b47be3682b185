"""A self-contained HTML memory-trace viewer: for each trajectory, every memory step with the chunk it read
(collapsed), the memory after it with what changed since the previous memory highlighted, the reference answer
marked where it occurs in the chunk and in the memory, and the step where a seen answer was dropped; then the
answer, the references and the scores (or, for training rollouts, the rewards).

One file, inline CSS, no scripts and no external resources, so it can be mailed or opened offline. Every piece of
model and data text is escaped: a model can write ``<script>`` into its memory, a document can hold it too.
"""

from __future__ import annotations

import difflib
import html
import re
from typing import Any

from memfactory_cli.report.retention import Retention, memory_steps, retention
from memfactory_cli.rewards.qa import reference_spans

_TOKENS = re.compile(r"\s+|[^\s]+")
Spans = list[tuple[int, int]]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{font-size:1.4rem} details{border:1px solid #ccc;border-radius:6px;margin:.6rem 0;padding:.3rem .8rem}
summary{cursor:pointer;font-weight:600} .meta{color:#666;font-weight:400;font-size:.9em}
.mem{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;background:#f7f7f7;
border-left:3px solid #bbb;padding:.4rem .6rem;margin:.3rem 0}
ins{background:#c8f7c5;text-decoration:none} del{background:#fbd0d0;color:#933}
.answer{border-left-color:#2a7}.score{display:inline-block;margin-right:.8rem}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
mark{background:#ffe066;padding:0 .1em;border-radius:2px} details.chunk{border:none;margin:.2rem 0;padding:0}
details.chunk>summary{font-weight:400;color:#555;font-size:.85rem} .chunktext{border-left-color:#79a6d2;background:#f3f7fb}
.step{margin-top:.7rem} .badge{display:inline-block;font-size:.75rem;border-radius:3px;padding:0 .35rem;margin-left:.4rem}
.seen{background:#fff3bf;color:#7a5b00} .held{background:#d3f9d8;color:#1b6b2a} .dropped{background:#c92a2a;color:#fff;font-weight:700}
.lost{background:#ffe3e3;color:#a61e1e} .mem.dropmem{border-left-color:#c92a2a}
"""


def _escape_marked(text: str, start: int, end: int, marks: Spans) -> str:
    """``text[start:end]`` escaped, the parts inside ``marks`` (sorted, disjoint spans of ``text``) in ``<mark>``."""
    out, i = [], start
    for a, b in marks:
        a, b = max(a, i), min(b, end)
        if a < b:
            out += [html.escape(text[i:a]), f"<mark>{html.escape(text[a:b])}</mark>"]
            i = b
    out.append(html.escape(text[i:end]))
    return "".join(out)


def marked_html(text: str, marks: Spans = ()) -> str:
    return _escape_marked(text, 0, len(text), list(marks))


def diff_html(before: str, after: str, marks_before: Spans = (), marks_after: Spans = ()) -> str:
    """``after`` with words added since ``before`` in ``<ins>`` and words dropped in ``<del>``, all escaped; the
    character spans ``marks_before`` / ``marks_after`` (the reference answer) are also in ``<mark>``."""
    a, b = list(_TOKENS.finditer(before)), list(_TOKENS.finditer(after))
    out = []

    def piece(text: str, toks: list[re.Match], i: int, j: int, marks: Spans) -> str:
        return _escape_marked(text, toks[i].start(), toks[j - 1].end(), list(marks)) if j > i else ""

    matcher = difflib.SequenceMatcher(a=[t.group() for t in a], b=[t.group() for t in b], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op in ("delete", "replace"):
            out.append(f"<del>{piece(before, a, i1, i2, marks_before)}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{piece(after, b, j1, j2, marks_after)}</ins>")
        if op == "equal":
            out.append(piece(after, b, j1, j2, marks_after))
    return "".join(out)


def _scores(scores: dict[str, Any] | None) -> str:
    if not scores:
        return "<span class='meta'>no scores (no reference answers)</span>"
    return "".join(
        f"<span class='score'>{html.escape(name)}: <b>{'n/a' if v is None else f'{v:.3f}'}</b></span>"
        for name, v in scores.items()
    )


def _rewards(r: dict[str, Any]) -> str:
    """A training rollout's rewards (it has no eval scores)."""
    parts = [f"<span class='score'>{html.escape(str(n))}: <b>{'n/a' if v is None else f'{v:.3f}'}</b></span>" for n, v in (r.get("rewards") or {}).items()]
    if r.get("reward") is not None:
        parts.append(f"<span class='score'>reward: <b>{r['reward']:.3f}</b></span>")
    return "".join(parts) or "<span class='meta'>no rewards</span>"


def _verdict(ret: Retention | None) -> str:
    """The trajectory's retention in a few words, for its title line."""
    if ret is None:
        return ""
    if ret.first_seen is None:
        return "<span class='badge lost'>answer never in the document</span>"
    text = f"answer first in chunk {ret.first_seen}"
    dropped = f"dropped after chunk {', '.join(map(str, ret.dropped_at))}"
    if ret.final:
        again = f", {dropped}, taken up again" if ret.dropped_at else ""
        return f"<span class='badge held'>{text}; in the final memory{again}</span>"
    if ret.dropped_at:
        return f"<span class='badge dropped'>{text}; {dropped}</span>"
    return f"<span class='badge lost'>{text}; not kept</span>"


def _step_notes(ret: Retention | None, k: int) -> list[tuple[str, str]]:
    """What step ``k`` (1-based) did with the reference answer: (badge class, words) pairs."""
    if ret is None:
        return []
    out = [("seen", "answer in this chunk")] if ret.in_chunk[k - 1] else []
    if k in ret.dropped_at:
        out.append(("dropped", "✗ dropped the answer"))
    elif k in ret.not_kept_at:
        out.append(("lost", "answer not kept"))
    elif ret.held[k - 1]:
        out.append(("held", "memory holds the answer"))
    return out


def _badges(ret: Retention | None, k: int) -> str:
    return "".join(f"<span class='badge {cls}'>{words}</span>" for cls, words in _step_notes(ret, k))


def _record(index: int, r: dict[str, Any]) -> str:
    e = html.escape
    label = " · ".join(str(r[k]) for k in ("set", "model") if r.get(k))
    if r.get("step") is not None:
        label = " · ".join(x for x in (label, f"step {r['step']}") if x)
    where = f"{label} · " if label else ""
    which = f"sample {r.get('sample', 0)}" if "slot" not in r else f"slot {r['slot']}"
    title = f"#{index + 1} {where}question {r.get('id', index)}, {which}"
    scored = _rewards(r) if not r.get("scores") and (r.get("rewards") or r.get("reward") is not None) else _scores(r.get("scores"))
    references = [str(a) for a in r.get("answers") or []]
    ret = retention(r)
    parts = [
        f"<details class='traj'{' open' if index == 0 else ''}><summary>{e(title)} <span class='meta'>{scored}</span>{_verdict(ret)}</summary>",
        f"<p><b>Question.</b> {e(str(r.get('question', '')))}</p>",
        f"<p><b>References.</b> {e(' | '.join(references)) or '<i>none</i>'}</p>",
    ]
    steps: list[tuple[str | None, str]] = list(memory_steps(r)) or [(None, str(m)) for m in r.get("memories") or []]
    previous, previous_marks = "", []
    for k, (chunk, memory) in enumerate(steps, 1):
        marks = reference_spans(memory, references)
        changed = "unchanged" if memory == previous else "changes highlighted"
        badges = _badges(ret, k) if chunk is not None else ""
        parts.append(f"<div class='step meta'>memory after chunk {k}/{len(steps)} ({changed}){badges}</div>")
        if chunk is not None:
            chunk_marks = reference_spans(chunk, references)
            found = f", the answer {len(chunk_marks)}×" if chunk_marks else ""
            parts.append(
                f"<details class='chunk'><summary>chunk {k} read ({len(chunk)} characters{found})</summary>"
                f"<div class='mem chunktext'>{marked_html(chunk, chunk_marks) or '<i>(empty)</i>'}</div></details>"
            )
        dropped = " dropmem" if ret is not None and chunk is not None and k in ret.dropped_at else ""
        parts.append(f"<div class='mem{dropped}'>{diff_html(previous, memory, previous_marks, marks) or '<i>(empty)</i>'}</div>")
        previous, previous_marks = memory, marks
    parts.append("<div class='meta'>final answer</div>")
    parts.append(f"<div class='mem answer'>{e(str(r.get('answer', ''))) or '<i>(empty)</i>'}</div>")
    if "memory_within_budget" in r:
        parts.append(f"<p class='meta'>{e(str(r.get('turns', '?')))} turns; every memory update within budget: {e(str(r['memory_within_budget']))}</p>")
    parts.append(f"<p>{scored}</p></details>")
    return "\n".join(parts)


def trace_html(records: list[dict[str, Any]], title: str = "memfactory memory trace") -> str:
    """The whole page for a list of trajectory records (``Trajectory.to_record()`` or results.jsonl rows)."""
    body = "\n".join(_record(i, r) for i, r in enumerate(records))
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='meta'>{len(records)} trajectories. "
        "Inserted words are <ins>green</ins>, dropped words <del>red</del>, relative to the previous memory; the "
        "reference answer is <mark>marked</mark> in each chunk (click to open) and memory.</p>"
        f"{body}</body></html>\n"
    )


def trace_text(r: dict[str, Any]) -> str:
    """One trajectory as plain text (for dashboards that show text, e.g. SwanLab): each chunk read and the memory
    after it, with what the step did with the reference answer, then the answer and the rewards."""
    references = [str(a) for a in r.get("answers") or []]
    ret = retention(r)
    lines = [f"question: {r.get('question', '')}", f"references: {' | '.join(references) or '(none)'}"]
    steps: list[tuple[str | None, str]] = list(memory_steps(r)) or [(None, str(m)) for m in r.get("memories") or []]
    for k, (chunk, memory) in enumerate(steps, 1):
        notes = _step_notes(ret, k) if chunk is not None else []
        if chunk is not None:
            lines += ["", f"--- chunk {k}/{len(steps)} read ---", chunk]
        lines += [f"--- memory after chunk {k}/{len(steps)}{' (' + '; '.join(w for _, w in notes) + ')' if notes else ''} ---", memory or "(empty)"]
    lines += ["", "--- answer ---", str(r.get("answer", "")) or "(empty)"]
    scored = r.get("scores") or r.get("rewards") or {}
    if scored:
        lines.append(", ".join(f"{k}={'n/a' if v is None else f'{v:.3f}'}" for k, v in scored.items()))
    return "\n".join(lines)
