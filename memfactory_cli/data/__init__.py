"""Datasets: every named set, file and hub id resolved to canonical rows.

``files`` reads data files (``data/``, .json / .jsonl / .parquet, hub offline); ``sources`` resolves a set name, file
or hub id and normalises rows (MemAgent / RULER long documents, ``synth``'s seeded long-document generator);
``locomo`` holds LoCoMo and its synthetic two-person look-alike (Memory-R1); ``dialogues`` the multi-session chats
(RMM: LongMemEval, MSC, the seeded multi-session generator); ``ruler`` regenerates RULER tasks offline. Every named
set registers itself with ``@register("dataset", name)`` at module level.
"""
