"""A self-contained HTML memory-trace viewer: for each trajectory, the memory after every chunk with what changed
since the previous memory highlighted, then the answer, the references and the scores.

One file, inline CSS, no scripts and no external resources, so it can be mailed or opened offline. Every piece of
model text is escaped: a model can write ``<script>`` into its memory.
"""

from __future__ import annotations

import difflib
import html
import re
from typing import Any

_TOKENS = re.compile(r"\s+|[^\s]+")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{font-size:1.4rem} details{border:1px solid #ccc;border-radius:6px;margin:.6rem 0;padding:.3rem .8rem}
summary{cursor:pointer;font-weight:600} .meta{color:#666;font-weight:400;font-size:.9em}
.mem{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;background:#f7f7f7;
border-left:3px solid #bbb;padding:.4rem .6rem;margin:.3rem 0}
ins{background:#c8f7c5;text-decoration:none} del{background:#fbd0d0;color:#933}
.answer{border-left-color:#2a7}.score{display:inline-block;margin-right:.8rem}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
"""


def diff_html(before: str, after: str) -> str:
    """``after`` with words added since ``before`` in ``<ins>`` and words dropped in ``<del>``, all escaped."""
    a, b = _TOKENS.findall(before), _TOKENS.findall(after)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            out.append(f"<del>{html.escape(''.join(a[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{html.escape(''.join(b[j1:j2]))}</ins>")
        if op == "equal":
            out.append(html.escape("".join(b[j1:j2])))
    return "".join(out)


def _scores(scores: dict[str, Any] | None) -> str:
    if not scores:
        return "<span class='meta'>no scores (no reference answers)</span>"
    return "".join(
        f"<span class='score'>{html.escape(name)}: <b>{'n/a' if v is None else f'{v:.3f}'}</b></span>"
        for name, v in scores.items()
    )


def _record(index: int, r: dict[str, Any]) -> str:
    e = html.escape
    label = " · ".join(str(r[k]) for k in ("set", "model") if r.get(k))
    where = f"{label} · " if label else ""
    title = f"#{index + 1} {where}question {e(str(r.get('id', index)))}, sample {r.get('sample', 0)}"
    parts = [
        f"<details{' open' if index == 0 else ''}><summary>{e(title)} <span class='meta'>{_scores(r.get('scores'))}</span></summary>",
        f"<p><b>Question.</b> {e(str(r.get('question', '')))}</p>",
        f"<p><b>References.</b> {e(' | '.join(map(str, r.get('answers') or []))) or '<i>none</i>'}</p>",
    ]
    memories = list(r.get("memories") or [])
    previous = ""
    for k, memory in enumerate(memories, 1):
        changed = "unchanged" if memory == previous else "changes highlighted"
        parts.append(f"<div class='meta'>memory after chunk {k}/{len(memories)} ({changed})</div>")
        parts.append(f"<div class='mem'>{diff_html(previous, memory) or '<i>(empty)</i>'}</div>")
        previous = memory
    parts.append("<div class='meta'>final answer</div>")
    parts.append(f"<div class='mem answer'>{e(str(r.get('answer', ''))) or '<i>(empty)</i>'}</div>")
    if "memory_within_budget" in r:
        parts.append(f"<p class='meta'>{r.get('turns', '?')} turns; every memory update within budget: {r['memory_within_budget']}</p>")
    parts.append(f"<p>{_scores(r.get('scores'))}</p></details>")
    return "\n".join(parts)


def trace_html(records: list[dict[str, Any]], title: str = "memfactory memory trace") -> str:
    """The whole page for a list of trajectory records (``Trajectory.to_record()`` or results.jsonl rows)."""
    body = "\n".join(_record(i, r) for i, r in enumerate(records))
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='meta'>{len(records)} trajectories. "
        "Inserted words are <ins>green</ins>, dropped words <del>red</del>, relative to the previous memory.</p>"
        f"{body}</body></html>\n"
    )
