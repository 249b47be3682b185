"""RMM (Reflective Memory Management, Tan et al. 2025): topic memories in, a learned reranker out.

One episode = a question asked after a haystack of past sessions. A rollout:

1. **Prospective reflection** builds the episode's bank (``options.memory: reflection``): after each session the
   LLM writes topic summaries per speaker (two prompts), and for each summary decides ``Add()`` or
   ``Merge(index, merged)`` against the ``update_top_k`` most similar entries. ``memory: turn | session`` stores raw
   turns or sessions instead (no LLM calls; for the reranker alone and CPU runs).
2. **Retrieve** the top-K entries with the retriever (frozen embeddings).
3. **Rerank**, by ``agent.reranker``:
   - ``linear`` (paper): the residual linear reranker keeps M of K (Gumbel top-M while training, top-M in eval);
     after the answer it learns by REINFORCE from the citations (:meth:`learn`, driven by ``trainer/reinforce.py``);
   - ``llm`` (MemFactory-style, not the paper's method): the policy picks at most ``llm_max_ids`` ids from the top
     ``llm_top_k``; that turn is what GRPO trains, with the ``rmm_*`` rewards;
   - ``none``: the embedder's own top-M (the no-reranker baseline).
4. **Answer** from the kept memories and **cite** them ``[i, j]`` / ``[NO_CITE]``.

Trajectories are batched across episodes at every stage: one generate call per reflection stage, rerank and answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from memfactory_cli.agents.base import BaseAgent, Episode, Learner, Trajectory, Turn
from memfactory_cli.data.dialogues import from_conversation_row, gold_turns
from memfactory_cli.errors import UserError
from memfactory_cli.generation.base import Generator
from memfactory_cli.modules import reflection as rf
from memfactory_cli.modules.reranker import LinearReranker, RerankerConfig
from memfactory_cli.modules.text import chat_ids, stop_ids
from memfactory_cli.registry import register

RERANKERS = ("linear", "llm", "none")
# The file ``trainer/reinforce.py`` writes next to the run and ``options.reranker_weights`` loads.
WEIGHTS_FILE = "reranker.pt"


@dataclass
class RMMConfig:
    memory: Literal["reflection", "turn", "session"] = "reflection"  # what one bank entry is
    top_k: int = 20  # K retrieved
    top_m: int = 5  # M kept and shown to the answer prompt
    tau: float = 0.5
    learning_rate: float = 1e-3
    baseline: float = 0.5
    batch_size: int = 4  # queries per reranker optimizer step
    seed: int = 0
    update_top_k: int = 5  # similar entries shown to the Add/Merge decision
    llm_top_k: int = 30  # candidates shown to the LLM reranker
    llm_max_ids: int = 8
    max_extract_tokens: int = 512
    max_update_tokens: int = 256
    max_rerank_tokens: int = 64
    max_answer_tokens: int = 128
    enable_thinking: bool = False
    reranker_weights: str = ""  # a trained linear reranker (``<run>/final/reranker.pt``)
    # RMM's online (test-time) adaptation, linear reranker: in evaluation every question is answered, then the
    # reranker learns from its citations before the next optimizer batch is answered
    online: bool = False
    # what online mode serves: gumbel (the paper's stochastic top-M, as in training) or top_m (the deterministic
    # eval selection, learned from all the same; with cosine-scale scores and tau 0.5 Gumbel is close to uniform)
    online_selection: Literal["gumbel", "top_m"] = "gumbel"

    def __post_init__(self) -> None:
        rf.check_positive(
            "agent.options", top_k=self.top_k, top_m=self.top_m, update_top_k=self.update_top_k, llm_top_k=self.llm_top_k,
            llm_max_ids=self.llm_max_ids, max_extract_tokens=self.max_extract_tokens, max_update_tokens=self.max_update_tokens,
            max_rerank_tokens=self.max_rerank_tokens, max_answer_tokens=self.max_answer_tokens,
        )

    def reranker(self) -> RerankerConfig:
        return RerankerConfig(
            top_k=self.top_k, top_m=self.top_m, tau=self.tau, learning_rate=self.learning_rate, baseline=self.baseline,
            batch_size=self.batch_size, seed=self.seed,
        )


@dataclass
class RMMTrajectory(Trajectory):
    """A trajectory plus what RMM retrieved, kept and cited; ``scores`` are its own retrieval metrics."""

    bank: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)  # bank indices, retrieval order
    selected: list[int] = field(default_factory=list)  # positions in ``candidates``, selection order
    cited: list[int] | None = None  # positions in ``selected``; None when the reply had no citation group
    answer_text: str = ""
    stats: dict[str, float] = field(default_factory=dict)
    query_embedding: Any = None
    candidate_embeddings: Any = None

    @property
    def answer(self) -> str:
        return self.answer_text

    def to_record(self) -> dict[str, Any]:
        kept = [self.bank[self.candidates[p]] for p in self.selected]
        return {
            **super().to_record(),
            "question_type": self.episode.row.get("question_type"),
            "abstention": bool(self.episode.row.get("abstention")),
            "bank_size": len(self.bank),
            "kept": kept,
            "cited": self.cited,
            "retrieval": self.scores,
        }


def _decode_sessions(row: dict[str, Any]) -> dict[str, Any]:
    """Rows from the TRL dataset carry sessions as JSON text (one column type); rows from files as lists; LoCoMo
    question rows (``meta.turns``, e.g. ``memfactory eval --set locomo_test``) are regrouped into sessions."""
    sessions = row.get("sessions")
    if sessions is None and isinstance(row.get("meta"), dict) and "turns" in row["meta"]:
        return from_conversation_row(row)
    if not isinstance(sessions, (str, list)):
        raise UserError(f"row {row.get('id')}: rmm needs multi-session rows (LongMemEval, MSC, LoCoMo questions, rmm_synth_*)")
    return {**row, "sessions": json.loads(sessions)} if isinstance(sessions, str) else row


@register("agent", "rmm")
class RMMAgent(BaseAgent):
    """Module slot ``retriever`` (family ``retriever``, default ``embedding``); options: :class:`RMMConfig`.

    The linear reranker is not trained by GRPO: its learner is ``reinforce`` (``trainer/reinforce.py``); the ``llm``
    reranker's turn is trained by GRPO.
    """

    name = "rmm"
    Config = RMMConfig
    slots = {"retriever": "retriever"}
    defaults = {"retriever": {"name": "embedding"}}
    settings = {"reranker": RERANKERS}
    learner = "reinforce"

    def __init__(self, tokenizer: Any, modules: dict[str, dict[str, Any]], reranker: str = "linear", config: RMMConfig | None = None):
        super().__init__(tokenizer, modules, config, reranker=reranker)
        self.kind = reranker
        self.retriever = self.module("retriever")
        self.training = False  # Gumbel sampling (train) or plain top-M (eval) for the linear reranker
        self._reranker: LinearReranker | None = None
        # Prospective reflection of a frozen LLM is a function of the conversation alone: banks are built once per
        # conversation (this agent serves one model) and reused by every rollout and eval. ``reflector``, when set,
        # is the generator they are built with (``memfactory train``: the greedy one), whatever samples the answers.
        self.reflector: Generator | None = None
        self._banks: dict[str, rf.TopicBank] = {}
        if reranker == "linear" or self.config.memory == "reflection":
            self._require_embeddings()
        if self.config.online and reranker != "linear":
            raise UserError("agent.options.online: only the linear reranker adapts online (agent.reranker=linear)")
        self.online = self.config.online  # the trainer's before/after eval runs with it off: it measures the trained weights
        self.stop_ids = stop_ids(tokenizer)

    @classmethod
    def learner_for(cls, agent_cfg: Any) -> Learner:
        return "grpo" if agent_cfg.reranker == "llm" else "reinforce"

    def _require_embeddings(self) -> None:
        if not callable(getattr(self.retriever, "embed", None)):
            raise UserError(
                "agent.modules.retriever: the linear reranker and the Add/Merge update need embeddings; "
                "use the embedding or hybrid retriever"
            )

    @property
    def reranker(self) -> LinearReranker:
        """Built on first use, with the dimension the embedder reports (never a hard-coded size)."""
        if self._reranker is None:
            self._reranker = LinearReranker(int(self.retriever.embed(["dimension probe"]).shape[-1]), self.config.reranker())
            if self.config.reranker_weights:
                self._reranker.load(self.config.reranker_weights)
        return self._reranker

    def finish_learning(self) -> None:
        """Step the reranker on a partial last batch, so no gradient is dropped."""
        self.reranker.step()

    def save(self, folder: Path) -> Path:
        path = folder / WEIGHTS_FILE
        self.reranker.save(path)
        return path

    @property
    def max_completion_tokens(self) -> int:
        c = self.config
        return max(c.max_extract_tokens, c.max_update_tokens, c.max_rerank_tokens, c.max_answer_tokens)

    # -- text <-> ids ---------------------------------------------------------------------------------------------
    def _prompt(self, text: str) -> list[int]:
        return chat_ids(self.tokenizer, text, self.config.enable_thinking)

    def _generate(self, generator: Generator, texts: list[str], budget: int) -> list[tuple[list[int], list[int], str]]:
        """(prompt ids, completion ids, completion text) per prompt, in one generate call."""
        if not texts:
            return []
        prompts = [self._prompt(t) for t in texts]
        completions = generator.generate(prompts, budget)
        decoded = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        return [(p, c, d.strip()) for p, c, d in zip(prompts, completions, decoded)]

    def _finished(self, completion: list[int]) -> bool:
        return bool(completion) and completion[-1] in self.stop_ids

    def _embed(self, texts: list[str]) -> Any:
        return self.retriever.embed(texts)

    # -- episodes ---------------------------------------------------------------------------------------------------
    def episodes(self, rows: list[dict[str, Any]]) -> list[Episode]:
        return super().episodes([_decode_sessions(r) for r in rows])

    # -- prospective reflection -------------------------------------------------------------------------------------
    def raw_bank(self, row: dict[str, Any]) -> rf.TopicBank:
        """One entry per turn or per session, embedded in one batch (``memory: turn | session``)."""
        entries = []
        for k, s in enumerate(row["sessions"]):
            lines = [(f"{s['id']}:{j}", f"{t['speaker']}: {t['text']}") for j, t in enumerate(s["turns"])]
            if self.config.memory == "turn":
                entries += [rf.MemoryEntry(text, [ref], s["id"], s["date"], order=k) for ref, text in lines]
            elif lines:
                entries.append(rf.MemoryEntry("\n".join(t for _, t in lines), [r for r, _ in lines], s["id"], s["date"], order=k))
        if entries:
            for entry, vector in zip(entries, self._embed([e.summary for e in entries])):
                entry.embedding = vector
        return rf.TopicBank(entries)

    def reflect(self, rows: list[dict[str, Any]], generator: Generator, stats: dict[str, float]) -> list[rf.TopicBank]:
        """Prospective reflection over every row's sessions in order, batched across rows (sequential within one)."""
        c = self.config
        banks = [rf.TopicBank() for _ in rows]
        for k in range(max((len(r["sessions"]) for r in rows), default=0)):
            jobs = []  # (row index, speaker)
            for i, r in enumerate(rows):
                if k < len(r["sessions"]):
                    speakers = list(dict.fromkeys(t["speaker"] for t in r["sessions"][k]["turns"]))[:2]
                    jobs += [(i, sp) for sp in speakers]
            texts = [self._extract_text(rows[i]["sessions"][k], sp) for i, sp in jobs]
            new: dict[int, list[rf.MemoryEntry]] = {}
            for (i, _), (_, _, text) in zip(jobs, self._generate(generator, texts, c.max_extract_tokens)):
                session = rows[i]["sessions"][k]
                parsed = rf.parse_extraction(text, len(session["turns"]))
                stats["extract/calls"] += 1
                stats["extract/invalid"] += not parsed.ok
                for e in parsed.value:
                    refs = [f"{session['id']}:{j}" for j in e.reference]
                    new.setdefault(i, []).append(rf.MemoryEntry(e.summary, refs, session["id"], session["date"], order=k))
            self._update_banks(banks, new, generator, stats)
        return banks

    def _update_banks(
        self, banks: list[rf.TopicBank], new: dict[int, list[rf.MemoryEntry]], generator: Generator, stats: dict[str, float]
    ) -> None:
        """Round r decides the r-th new memory of every row in one call; an empty bank takes it without asking."""
        for r in range(max((len(v) for v in new.values()), default=0)):
            asks = []
            for i, memories in new.items():
                if r >= len(memories):
                    continue
                entry = memories[r]
                entry.embedding = self._embed([entry.summary])[0]
                bank = banks[i]
                if not bank.entries:
                    rf.apply_update(bank, entry, [], rf.Parsed([rf.Add()], ok=True), self._embed)
                    stats["update/add"] += 1
                    continue
                sims = bank.matrix() @ entry.embedding
                candidates = sorted(range(len(bank.entries)), key=lambda j: (-float(sims[j]), j))[: self.config.update_top_k]
                asks.append((i, entry, candidates))
            texts = [self._update_text(entry, [banks[i].entries[j] for j in cands]) for i, entry, cands in asks]
            for (i, entry, cands), (_, _, text) in zip(asks, self._generate(generator, texts, self.config.max_update_tokens)):
                parsed = rf.parse_update(text, len(cands))
                stats["update/invalid"] += not parsed.ok
                merged = parsed.ok and any(isinstance(a, rf.Merge) for a in parsed.value)
                stats["update/merge" if merged else "update/add"] += 1
                rf.apply_update(banks[i], entry, cands, parsed, self._embed)

    @staticmethod
    def _extract_text(session: dict[str, Any], speaker: str) -> str:
        lines = "\n".join(f"[{j}] {t['speaker']}: {t['text']}" for j, t in enumerate(session["turns"]))
        return rf.EXTRACT_INSTRUCTION.replace("{speaker}", speaker) + rf.EXTRACT_BODY.format(date=session["date"], session=lines, speaker=speaker)

    @staticmethod
    def _update_text(entry: rf.MemoryEntry, existing: list[rf.MemoryEntry]) -> str:
        listing = "\n".join(f"[{j}] {e.summary}" for j, e in enumerate(existing))
        return rf.UPDATE_INSTRUCTION + rf.UPDATE_BODY.format(summary=entry.summary, entries=listing)

    # -- retrospective reflection -------------------------------------------------------------------------------------
    @property
    def llm_frozen(self) -> bool:
        """Only the MemFactory-style ``llm`` reranker trains the LLM that also reflects."""
        return self.kind != "llm"

    @staticmethod
    def _conversation_key(row: dict[str, Any]) -> str:
        """The haystack's identity: its content, so two rows with one id but other sessions never share a bank."""
        import hashlib

        return hashlib.sha256(json.dumps(row["sessions"], sort_keys=True, default=str).encode()).hexdigest()

    def banks_for(self, rows: list[dict[str, Any]], generator: Generator, stats: dict[str, float]) -> list[rf.TopicBank]:
        """Each row's bank: from the cache when the LLM is frozen (counted in ``reflection/cached``), else built;
        rows missing from the cache are reflected together, batched across rows."""
        keys = [self._conversation_key(r) for r in rows]
        cache = self._banks if self.llm_frozen else {}
        todo = list({k: r for k, r in zip(keys, rows) if k not in cache}.items())
        stats["reflection/cached"] += sum(k in cache for k in keys)
        if todo:
            todo_rows = [r for _, r in todo]
            if self.config.memory == "reflection":
                built = self.reflect(todo_rows, self.reflector or generator, stats)
            else:
                built = [self.raw_bank(r) for r in todo_rows]
            fresh = dict(zip((k for k, _ in todo), built))
            if self.llm_frozen:
                self._banks.update(fresh)
            cache = {**cache, **fresh}
        return [cache[k] for k in keys]

    def rollout(self, episodes: list[Episode], generator: Generator) -> list[Trajectory]:
        """Banks are built once per distinct conversation (its G samples share one bank), and with a frozen LLM
        once per run (:meth:`banks_for`).

        Online evaluation (``options.online``) is prequential: episodes are answered in chunks that end exactly
        where the reranker takes its next optimizer step, and each chunk is learned from before the next is
        answered. The weights change only at a step, so this is the same as answering and learning one question at
        a time (tests/test_rmm_agent.py), with the answers still batched.
        """
        if not (self.online and not self.training):
            return self._rollout(episodes, generator, sample=self.training)
        out: list[Trajectory] = []
        while len(out) < len(episodes):
            chunk = episodes[len(out) : len(out) + self.config.batch_size - self.reranker.pending]
            trajs = self._rollout(chunk, generator, sample=self.config.online_selection == "gumbel")
            learned = self.learn(trajs)
            for t in trajs:
                t.stats["online/updates"] = learned["reranker/updates"] / len(trajs)
            out += trajs
        return out

    def eval_report(self, records: list[dict[str, Any]]) -> dict[str, Any] | None:
        """For an online evaluation's summary: the running recall@m over the test stream (question order), at up
        to 20 evenly spaced points, and the first against the second half; None when not online."""
        if not self.online:
            return None
        stream = [r["scores"]["recall@m"] for r in sorted(records, key=lambda r: (r["q"], r["sample"])) if r["scores"].get("recall@m") is not None]
        if not stream:
            return {"online": True, "scored": 0}
        running = [sum(stream[: i + 1]) / (i + 1) for i in range(len(stream))]
        points = sorted({round(len(stream) * j / 20) - 1 for j in range(1, 21)} - {-1})
        half = len(stream) // 2
        return {
            "online": True,
            "scored": len(stream),
            "running_recall@m": [{"n": i + 1, "recall@m": running[i]} for i in points],
            "first_half_recall@m": sum(stream[:half]) / half if half else None,
            "second_half_recall@m": sum(stream[half:]) / (len(stream) - half),
        }

    def _rollout(self, episodes: list[Episode], generator: Generator, sample: bool) -> list[Trajectory]:
        stats: dict[str, float] = dict.fromkeys(
            ("extract/calls", "extract/invalid", "update/add", "update/merge", "update/invalid", "reflection/cached"), 0.0
        )
        unique = list({e.id: e for e in episodes}.values())
        banks = dict(zip((e.id for e in unique), self.banks_for([e.row for e in unique], generator, stats)))
        trajs = [RMMTrajectory(episode=e, bank=[x.to_record() for x in banks[e.id].entries]) for e in episodes]
        for t in trajs:
            t.stats = {k: v / max(1, len(unique)) for k, v in stats.items()}
        self._retrieve(trajs, banks)
        if self.kind == "llm":
            self._llm_select(trajs, banks, generator)
        else:
            for t in trajs:
                t.selected = self._select(t, sample)
        self._answer(trajs, banks, generator)
        for t in trajs:
            self._score(t, banks[t.episode.id])
        return trajs

    def _retrieve(self, trajs: list[RMMTrajectory], banks: dict[str, rf.TopicBank]) -> None:
        k = self.config.llm_top_k if self.kind == "llm" else self.config.top_k
        for t in trajs:
            bank = banks[t.episode.id]
            t.candidates = self.retriever.search(t.episode.row["question"], bank.texts(), k)
            if self.kind == "linear" and t.candidates:
                t.query_embedding = self._embed([t.episode.row["question"]])[0]
                t.candidate_embeddings = bank.matrix()[t.candidates]

    def _select(self, t: RMMTrajectory, sample: bool) -> list[int]:
        if not t.candidates:
            return []
        if self.kind == "none":
            return list(range(min(self.config.top_m, len(t.candidates))))
        return self.reranker.select(t.query_embedding, t.candidate_embeddings, sample=sample)

    def _llm_select(self, trajs: list[RMMTrajectory], banks: dict[str, rf.TopicBank], generator: Generator) -> None:
        """MemFactory-style: the policy picks ids from the listed candidates; this is the turn GRPO trains."""
        c = self.config
        texts = []
        for t in trajs:
            entries = banks[t.episode.id].entries
            listing = "\n".join(f"[ID: {n}] {entries[b].summary}" for n, b in enumerate(t.candidates)) or "(none)"
            texts.append(rf.RERANK_INSTRUCTION.replace("{max_ids}", str(c.llm_max_ids)) + rf.RERANK_BODY.format(question=t.episode.row["question"], memories=listing))
        for t, (prompt, completion, text) in zip(trajs, self._generate(generator, texts, c.max_rerank_tokens)):
            parsed = rf.parse_rerank_ids(text, len(t.candidates), c.llm_max_ids)
            t.selected = parsed.value
            t.turns.append(Turn("rerank", prompt, completion, self._finished(completion), trainable=True, text=text))
            t.extras["rmm_rerank_ok"] = parsed.ok

    def _answer(self, trajs: list[RMMTrajectory], banks: dict[str, rf.TopicBank], generator: Generator) -> None:
        texts = []
        for t in trajs:
            entries = banks[t.episode.id].entries
            kept = [entries[t.candidates[p]] for p in t.selected]
            t.memories = [e.summary for e in kept]
            listing = "\n".join(f"[{n}] ({e.timestamp}) {e.summary}" for n, e in enumerate(kept)) or "(none)"
            row = t.episode.row
            texts.append(rf.ANSWER_INSTRUCTION + rf.ANSWER_BODY.format(memories=listing, date=row.get("question_date", ""), question=row["question"]))
        for t, (prompt, completion, text) in zip(trajs, self._generate(generator, texts, self.config.max_answer_tokens)):
            # The answer turn is never trained here: the linear reranker learns from its citations, and the llm
            # variant trains its rerank turn (which must be the trajectory's final turn for the trainer).
            if self.kind != "llm":
                t.turns.append(Turn("answer", prompt, completion, self._finished(completion), trainable=False, text=text))
            t.answer_text = text
            parsed = rf.parse_citations(text, len(t.selected))
            t.cited = parsed.value if parsed.ok else None
            t.stats["citation/missing"] = float(not parsed.ok)
            t.stats["citation/out_of_range"] = float(parsed.dropped)
            # no citation group: no citation count (None), never "cited nothing"
            t.extras.update(rmm_answer=text, rmm_selected=len(t.selected), rmm_cited=None if t.cited is None else len(t.cited))

    @staticmethod
    def _score(t: RMMTrajectory, bank: rf.TopicBank) -> None:
        """LongMemEval's retrieval recall over the K retrieved and the M kept entries (``src/retrieval/eval_utils``):

        - ``recall@k`` / ``recall@m``: turn-level recall_any, some gold evidence turn is referenced;
        - ``turn_recall_all@*``: every gold turn is referenced;
        - ``session_recall_any@*`` / ``session_recall_all@*``: the same over the sessions holding gold turns.

        An entry's turns are its references (with ``memory: reflection`` those the extraction LLM reported). None
        when there is no gold evidence, for abstention questions (LongMemEval leaves them out), and when the bank
        is empty (reflection stored nothing, so nothing was retrieved; ``bank/empty`` counts it).
        """
        gold = gold_turns(t.episode.row)
        t.stats["bank/empty"] = float(not bank.entries)
        scored = bool(gold) and bool(bank.entries) and not t.episode.row.get("abstention")
        gold_sessions = {g.rsplit(":", 1)[0] for g in gold}
        t.scores = {}
        for suffix, positions in (("k", t.candidates), ("m", [t.candidates[p] for p in t.selected])):
            turns = {r for b in positions for r in bank.entries[b].refs}
            sessions = {r.rsplit(":", 1)[0] for r in turns}
            values = {
                f"recall@{suffix}": bool(gold & turns),
                f"turn_recall_all@{suffix}": gold <= turns,
                f"session_recall_any@{suffix}": bool(gold_sessions & sessions),
                f"session_recall_all@{suffix}": gold_sessions <= sessions,
            }
            t.scores.update({name: float(v) if scored else None for name, v in values.items()})

    # -- learning -----------------------------------------------------------------------------------------------------
    def learn(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """Retrospective reflection: REINFORCE on every trajectory whose reply cited (or said NO_CITE).

        Trajectories without a citation group (or with nothing kept) give no signal: they are counted in
        ``reranker/skipped``, and loss/reward are absent when no trajectory was used (never a 0 that reads as one).
        """
        losses, rewards, used, skipped = [], [], 0, 0
        for t in trajectories:
            if not isinstance(t, RMMTrajectory):
                continue
            if t.cited is None or not t.selected:
                skipped += 1
                continue
            r = [1.0 if p in t.cited else -1.0 for p in range(len(t.selected))]
            losses.append(self.reranker.reinforce(t.query_embedding, t.candidate_embeddings, t.selected, r))
            rewards += r
            used += 1
        out = {"reranker/updates": float(used), "reranker/skipped": float(skipped)}
        if used:
            out.update({"reranker/loss": sum(losses) / len(losses), "reranker/reward": sum(rewards) / len(rewards)})
        return out

    def rollout_metrics(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """Means over trajectories of the reflection, citation and retrieval counters (logged every step)."""
        out: dict[str, list[float]] = {}
        for t in trajectories:
            if isinstance(t, RMMTrajectory):
                for k, v in {**t.stats, **{f"retrieval/{n}": s for n, s in t.scores.items()}}.items():
                    if v is not None:
                        out.setdefault(k, []).append(float(v))
                out.setdefault("bank/size", []).append(float(len(t.bank)))
        return {k: sum(v) / len(v) for k, v in sorted(out.items())}
