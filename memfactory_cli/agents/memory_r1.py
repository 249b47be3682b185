"""Memory-R1: a memory manager (ADD / UPDATE / DELETE / NOOP over retrieved memories) and an answer agent that
distils the memories it needs before answering; GRPO trains one of them (``agent.train: manager | answer``).

Manager trajectory (``turn`` rows): the bank before turn t is built from the previous ``manager_window`` turns by a
fixed manager (``history_manager``); the extractor lists the facts of turn t; the retriever picks the ``top_k`` old
memories closest to them; the policy writes one operation plan (the trained turn). The plan is applied to a copy of
the bank, then a **frozen** answer agent answers every question linked to turn t from that bank; its EM/F1/BLEU-1
and the plan's validity go to ``Trajectory.extras`` for the ``memory_r1_outcome`` / ``memory_r1_format`` rewards.

The frozen answer agent is a separately loaded copy of ``answer_model`` (default: the policy's base model) with
greedy decoding, not the policy with its LoRA adapter switched off: it stays frozen whether the policy is trained with
LoRA or in full, it may be a different (stronger) model, and the trainer's generation path is never borrowed for it.
It also runs the LLM extractor during manager training, since extraction is not what is trained.

Answer trajectory (``question`` rows, training and eval): the bank after the whole conversation is built by
``bank_manager`` (``add_all``: every extracted fact is added; ``policy``: the model being rolled out is the manager,
which is how ``memfactory eval`` measures a trained manager; or a model path, e.g. a trained manager checkpoint), the
retriever picks ``memories_per_speaker`` memories for each speaker, and the policy answers. Banks of fixed managers
are cached per conversation state; policy-built banks are rebuilt every rollout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from memfactory_cli.agents.base import BaseAgent, Episode, Trajectory, Turn
from memfactory_cli.envs.memory_bank import MemoryBank, MemoryEntry, Operation, bank_from_facts, row_kind
from memfactory_cli.errors import UserError
from memfactory_cli.generation.base import Generator, HFGenerator, SamplingParams
from memfactory_cli.modules.text import after_thinking, chat_ids, stop_ids
from memfactory_cli.modules.updater import Plan
from memfactory_cli.registry import register
from memfactory_cli.rewards.locomo import locomo_scores
from memfactory_cli.rewards.memory_r1 import answer_scores

ANSWER_MARKER = "**Answer:**"
_MARKER = re.compile(r"\*\*Answer(?::\*\*|\*\*:)")
ANSWER_PROMPT = """You are a memory assistant. Answer a question about a conversation between {a} and {b} from their
timestamped memories.
- Rely on direct evidence in the memories; when memories conflict, prefer the most recent one.
- Turn relative dates ("last year") into absolute ones using the memory timestamps, and do not confuse the two people.
- First list the memories relevant to the question, one per line. Then write "**Answer:**" followed by the answer
  in at most six words.

Memories for user {a}:
{memories_a}

Memories for user {b}:
{memories_b}

Question: {question}"""
OPS = ("ADD", "UPDATE", "DELETE", "NOOP")


@dataclass
class MemoryR1Config:
    answer_model: str = ""  # frozen answer agent (and extractor) for manager training; "" = the policy's base model
    answer_device: Literal["auto", "cpu", "cuda"] = "auto"
    answer_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bfloat16 on CUDA, float32 elsewhere
    # sequences per generate call of a frozen role (answer agent, extractor, fixed managers): a step's 150-250
    # answer prompts in one batch would hold 40-70 GB of KV cache (reviews/r1-rmm.md M2); HFGenerator's max_batch
    frozen_batch_size: int = 16
    # builds the bank before a turn row: add_all (rule: every extracted fact is added), frozen (the frozen answer model
    # runs the manager prompt over the window, as the paper's GPT-4o-mini did) or a model path / alias (a stronger
    # manager); LLM-built banks are cached per (conversation, window)
    history_manager: str = "add_all"
    bank_manager: str = "add_all"  # builds the bank of a question row: add_all | policy | frozen | <model path or alias>
    manager_window: int = 50  # prior turns in a turn row's bank (Memory-R1, Alg. 1)
    memories_per_speaker: int = 30  # the answer agent sees up to 2 x this many memories (Memory-R1: 30 + 30)
    max_answer_tokens: int = 64
    enable_thinking: bool = False

    def __post_init__(self) -> None:
        for name in ("manager_window", "memories_per_speaker", "max_answer_tokens", "frozen_batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"agent.options.{name} must be positive, got {getattr(self, name)}")
        if self.history_manager == "policy":
            raise UserError("agent.options.history_manager must be a fixed manager (add_all or a model), not policy")


def parse_answer(text: str) -> str | None:
    """The answer after the last marker (``**Answer:**``, or ``**Answer**:``), first line, emphasis stripped; None
    when there is no marker."""
    text = after_thinking(text)
    markers = list(_MARKER.finditer(text))
    if not markers:
        return None
    lines = [line.strip(" *\t") for line in text[markers[-1].end() :].strip().splitlines()]
    answer = next((line for line in lines if line), "")
    return answer or None


def final_answer(text: str) -> tuple[str | None, bool]:
    """(answer, marked): the answer after the marker; without one, the reply's last non-empty line, unmarked.

    The fallback keeps the outcome informative when the frozen answer model ignores the marker (SmolLM2-135M
    answers "The home city of Alice is Lisbon." in plain prose); ``marked`` is what the format reward checks.
    """
    answer = parse_answer(text)
    if answer is not None:
        return answer, True
    lines = [line.strip(" *\t") for line in after_thinking(text).splitlines()]
    lines = [line for line in lines if line]
    return (lines[-1] if lines else None), False


@dataclass
class Role:
    """A model that plays a part in a rollout: its tokenizer (prompts are built with it) and its generator."""

    tokenizer: Any
    generator: Generator


def frozen_role(name: str, device: str, dtype: str, max_batch: int) -> Role:
    """Load a model that is never trained, with greedy decoding, ``max_batch`` sequences per generate call (the
    same bounded path as the policy's eval generator)."""
    from memfactory_cli.config.schema import ModelConfig
    from memfactory_cli.models.loading import load_model, load_tokenizer, resolve_device, resolve_model_path

    path = resolve_model_path(name)
    device = resolve_device(device)
    dtype = ("bfloat16" if device == "cuda" else "float32") if dtype == "auto" else dtype
    tokenizer = load_tokenizer(path)
    model = load_model(ModelConfig(name_or_path=name, dtype=dtype), device, path).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Role(tokenizer, HFGenerator(model, tokenizer, SamplingParams(do_sample=False), max_batch=max_batch))


def _mean_scores(scores: list[dict[str, float | None]]) -> dict[str, float] | None:
    """The mean over a state's questions that have a gold answer; None when none has (no outcome, not 0)."""
    scores = [s for s in scores if None not in s.values()]
    if not scores:
        return None
    return {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}


@register("agent", "memory_r1")
class MemoryR1Agent(BaseAgent):
    """Slots: ``extractor`` (passthrough | llm), ``updater`` (memory_manager), ``retriever`` (embedding | bm25 | hybrid)."""

    name = "memory_r1"
    slots = {"extractor": "extractor", "updater": "updater", "retriever": "retriever"}
    defaults = {"extractor": {"name": "passthrough"}, "updater": {"name": "memory_manager"}, "retriever": {"name": "embedding"}}
    Config = MemoryR1Config
    settings = {"train": ("manager", "answer")}

    def __init__(self, tokenizer: Any, modules: dict[str, dict[str, Any]], train: str = "manager", config: MemoryR1Config | None = None):
        super().__init__(tokenizer, modules, config, train=train)
        if train == "answer" and self.config.bank_manager == "policy":
            raise UserError("agent.options.bank_manager: the answer agent trains on banks of a fixed manager (add_all or a model), not policy")
        self.train = train
        self._modules: dict[int, dict[str, Any]] = {}
        self.retriever = self.module("retriever")
        self.modules(tokenizer)  # validate module options now, not at the first rollout
        self._roles: dict[str, Role] = {}
        self._banks: dict[tuple, MemoryBank] = {}
        self._facts: dict[tuple, list[str]] = {}  # a frozen role's facts per turn

    # -- pieces ---------------------------------------------------------------------------------------------------
    def modules(self, tokenizer: Any) -> dict[str, Any]:
        """Extractor and updater built for one tokenizer (the policy's, or a frozen model's)."""
        key = id(tokenizer)
        if key not in self._modules:
            self._modules[key] = {slot: self.module(slot, tokenizer) for slot in ("extractor", "updater")}
        return self._modules[key]

    @property
    def updater(self) -> Any:
        return self.modules(self.tokenizer)["updater"]

    @property
    def max_completion_tokens(self) -> int:
        return max(self.updater.config.max_new_tokens, self.config.max_answer_tokens)

    def role(self, name: str) -> Role:
        """``frozen`` (the answer model) or a fixed manager model, loaded once."""
        if name not in self._roles:
            c = self.config
            model = (c.answer_model or self.tokenizer.name_or_path) if name == "frozen" else name
            self._roles[name] = frozen_role(model, c.answer_device, c.answer_dtype, c.frozen_batch_size)
        return self._roles[name]

    def set_frozen(self, role: Role) -> None:
        """Use ``role`` as the frozen answer agent (tests, or a caller that already holds the model)."""
        self._roles["frozen"] = role

    def extract(self, role: Role, turns: list[dict[str, Any]]) -> list[list[str]]:
        """The facts of each turn. A frozen role decodes greedily, so its facts of a turn are computed once: a turn
        sits in up to ``manager_window`` history windows (reviews/r1-rmm.md M11)."""
        extractor = self.modules(role.tokenizer)["extractor"]
        if not extractor.needs_model or not turns:
            return [extractor.parse("", t) for t in turns]
        frozen = any(role is r for r in self._roles.values())
        key = lambda t: (id(role), t.get("dia_id"), t["speaker"], t["text"], t["timestamp"])  # noqa: E731
        todo = [t for t in turns if not frozen or key(t) not in self._facts]
        completions = role.generator.generate(extractor.prompts(todo), extractor.config.max_new_tokens) if todo else []
        texts = role.tokenizer.batch_decode(completions, skip_special_tokens=True)
        fresh = [extractor.parse(x, t) for x, t in zip(texts, todo)]
        if not frozen:
            return fresh
        self._facts.update((key(t), f) for t, f in zip(todo, fresh))
        return [self._facts[key(t)] for t in turns]

    def shown(self, bank: MemoryBank, facts: list[str]) -> list[MemoryEntry]:
        """The ``top_k`` old memories closest to any of the facts, best first."""
        k = self.updater.config.top_k
        if not len(bank) or not facts:
            return []
        per_fact = [self.retriever.scores(f, bank.texts) for f in facts]
        best = [max(col) for col in zip(*per_fact)]
        order = sorted(range(len(best)), key=lambda i: (-best[i], i))[:k]
        return [bank.entries[i] for i in order]

    @staticmethod
    def apply(bank: MemoryBank, plan: Plan, shown: list[MemoryEntry], turn: dict[str, Any]) -> MemoryBank:
        """The bank after a plan; an invalid plan changes nothing."""
        if not plan.valid:
            return bank
        ops = [Operation(op.event, None if op.index is None else shown[op.index].id, op.text) for op in plan.ops]
        return bank.apply(ops, speaker=turn["speaker"], timestamp=turn["timestamp"])

    def manage(self, role: Role, items: list[tuple[MemoryBank, list[str], dict[str, Any], list[str]]]) -> list[tuple[list[int], list[int], str, Plan, MemoryBank]]:
        """One manager call for many (bank, facts, turn, speakers): prompt, completion, text, plan, new bank each."""
        updater = self.modules(role.tokenizer)["updater"]
        shown = [self.shown(bank, facts) for bank, facts, _, _ in items]
        prompts = [
            updater.prompt(facts, [e.text for e in s], speakers, turn["speaker"], turn["timestamp"])
            for (_, facts, turn, speakers), s in zip(items, shown)
        ]
        completions = role.generator.generate(prompts, updater.config.max_new_tokens)
        texts = role.tokenizer.batch_decode(completions, skip_special_tokens=True)
        out = []
        for (bank, _, turn, _), s, prompt, completion, text in zip(items, shown, prompts, completions, texts):
            plan = updater.parse(text, len(s))
            out.append((prompt, completion, text, plan, self.apply(bank, plan, s, turn)))
        return out

    def build_banks(self, manager: str, states: list[tuple[str, list[dict[str, Any]], int, int, list[str]]], policy: Role | None = None) -> list[MemoryBank]:
        """Banks of conversation states ``(conversation, turns, start, end, speakers)``: turns[start:end] replayed by
        ``manager`` (add_all, policy, or a model), all states advancing turn by turn together."""
        key = lambda s: (manager, s[0], s[2], s[3])  # noqa: E731
        todo = list({key(s): s for s in states if manager == "policy" or key(s) not in self._banks}.values())
        built: dict[tuple, MemoryBank] = {}
        if manager == "add_all":
            role = self.role("frozen") if self.modules(self.tokenizer)["extractor"].needs_model else Role(self.tokenizer, None)
            for s in todo:
                window = s[1][s[2] : s[3]]
                facts = self.extract(role, window)
                built[key(s)] = bank_from_facts((f, t["speaker"], t["timestamp"]) for t, fs in zip(window, facts) for f in fs)
        elif todo:
            role = policy if manager == "policy" else self.role(manager)
            banks = [MemoryBank() for _ in todo]
            for step in range(max(s[3] - s[2] for s in todo)):
                active = [i for i, s in enumerate(todo) if s[2] + step < s[3]]
                turns = [todo[i][1][todo[i][2] + step] for i in active]
                facts = self.extract(role, turns)
                results = self.manage(role, [(banks[i], f, t, todo[i][4]) for i, f, t in zip(active, facts, turns)])
                for i, result in zip(active, results):
                    banks[i] = result[4]
            built = {key(s): b for s, b in zip(todo, banks)}
        if manager != "policy":
            self._banks.update(built)
            built = self._banks
        return [built[key(s)] for s in states]

    def answer_prompt(self, tokenizer: Any, bank: MemoryBank, speakers: list[str], question: str) -> tuple[list[int], list[str]]:
        """The answer agent's prompt: up to ``memories_per_speaker`` retrieved memories of each speaker."""
        k = self.config.memories_per_speaker
        blocks, shown = [], []
        for speaker in speakers[:2]:
            entries = bank.of_speaker(speaker)
            picked = [entries[i] for i in self.retriever.search(question, [e.text for e in entries], k)]
            lines = [f"- {e.timestamp}: {e.text}" for e in picked]
            blocks.append("\n".join(lines) or "(none)")
            shown += lines
        a, b = (list(speakers) + ["", ""])[:2]
        text = ANSWER_PROMPT.format(a=a, b=b, memories_a=blocks[0], memories_b=blocks[1], question=question)
        return chat_ids(tokenizer, text, self.config.enable_thinking), shown

    def answer(self, role: Role, asks: list[tuple[MemoryBank, list[str], str]]) -> list[tuple[list[int], list[int], str, list[str]]]:
        """Answer (bank, speakers, question) triples with ``role``: prompt, completion, reply text, shown memories."""
        built = [self.answer_prompt(role.tokenizer, bank, speakers, q) for bank, speakers, q in asks]
        completions = role.generator.generate([p for p, _ in built], self.config.max_answer_tokens)
        texts = role.tokenizer.batch_decode(completions, skip_special_tokens=True)
        return [(p, c, t, shown) for (p, shown), c, t in zip(built, completions, texts)]

    # -- the agent contract ---------------------------------------------------------------------------------------
    def episodes(self, rows: list[dict[str, Any]]) -> list[Episode]:
        for r in rows:
            row_kind(r)
        return super().episodes(rows)

    def rollout(self, episodes: list[Episode], generator: Generator) -> list[Trajectory]:
        training = getattr(generator, "trainer", None) is not None  # the trainer's generator (duck-typed: no upward import)
        kinds = [row_kind(e.row) for e in episodes]
        wanted = "turn" if self.train == "manager" else "question"
        if training and any(k != wanted for k in kinds):
            sets = "locomo_turns_train or synth_dialogue_turns_train" if wanted == "turn" else "locomo_train or synth_dialogue_train"
            raise UserError(f"agent.train={self.train} trains on {wanted} rows ({sets}); data.train holds other rows")
        policy = Role(self.tokenizer, generator)
        out: list[Trajectory | None] = [None] * len(episodes)
        for kind, run in (("turn", self._rollout_manager), ("question", self._rollout_answer)):
            index = [i for i, k in enumerate(kinds) if k == kind]
            if index:
                for i, traj in zip(index, run([episodes[i] for i in index], policy)):
                    out[i] = traj
        return out  # type: ignore[return-value]

    def _rollout_manager(self, episodes: list[Episode], policy: Role) -> list[Trajectory]:
        metas = [e.row["meta"] for e in episodes]
        c = self.config
        states = [(m["conversation"], m["turns"], max(0, m["turn_index"] - c.manager_window), m["turn_index"], m["speakers"]) for m in metas]
        banks = self.build_banks(c.history_manager, states)
        turns = [m["turns"][m["turn_index"]] for m in metas]
        extractor_role = self.role("frozen") if self.modules(self.tokenizer)["extractor"].needs_model else policy
        unique = list({e.id: i for i, e in enumerate(episodes)}.values())  # G copies share one extraction
        facts_of = dict(zip((episodes[i].id for i in unique), self.extract(extractor_role, [turns[i] for i in unique])))
        facts = [facts_of[e.id] for e in episodes]
        results = self.manage(policy, [(b, f, t, m["speakers"]) for b, f, t, m in zip(banks, facts, turns, metas)])
        frozen = self.role("frozen")
        asks, owners = {}, []  # identical banks (e.g. G NOOP plans) ask the frozen agent once
        for e, m, (_, _, _, _, bank) in zip(episodes, metas, results):
            keys = []
            for q in m["qa"]:
                key = (e.id, bank, q["question"])
                asks.setdefault(key, (bank, m["speakers"], q["question"]))
                keys.append(key)
            owners.append(keys)
        replies = dict(zip(asks, self.answer(frozen, list(asks.values()))))
        trajectories = []
        for e, m, turn, keys, (prompt, completion, text, plan, bank) in zip(episodes, metas, turns, owners, results):
            scores = [answer_scores(final_answer(replies[k][2])[0], q["answers"]) for k, q in zip(keys, m["qa"])]
            counts = {op: sum(o.event == op for o in plan.ops) for op in OPS}
            finished = bool(completion) and completion[-1] in stop_ids(policy.tokenizer)
            trajectories.append(
                Trajectory(
                    episode=e,
                    turns=[Turn("memory_ops", prompt, completion, finished, text=text.strip())],
                    memories=[f"[{x.id}] {x.text}" for x in bank.entries],
                    chunks=[f"{turn['speaker']}: {turn['text']}"],  # retention: is the turn's fact in the bank after the ops
                    extras={"mr1_outcome": _mean_scores(scores), "mr1_format": plan.valid, "mr1_ops": counts, "mr1_bank_size": len(bank)},
                )
            )
        return trajectories

    def _rollout_answer(self, episodes: list[Episode], policy: Role) -> list[Trajectory]:
        metas = [e.row["meta"] for e in episodes]
        states = [(m["conversation"], m["turns"], 0, m["turn_index"], m["speakers"]) for m in metas]
        banks = self.build_banks(self.config.bank_manager, states, policy)
        replies = self.answer(policy, [(b, m["speakers"], e.row["question"]) for b, m, e in zip(banks, metas, episodes)])
        trajectories = []
        for e, bank, (prompt, completion, text, shown) in zip(episodes, banks, replies):
            answer, marked = final_answer(text)
            finished = bool(completion) and completion[-1] in stop_ids(policy.tokenizer)
            category = e.row["meta"].get("category")
            trajectories.append(
                Trajectory(
                    episode=e,
                    turns=[Turn("answer", prompt, completion, finished, text=answer or "")],
                    memories=shown,
                    scores=locomo_scores(answer, e.row["answers"][0] if e.row["answers"] else "", category),  # LoCoMo's own scores need the category
                    extras={
                        "mr1_outcome": answer_scores(answer, e.row["answers"]),
                        "mr1_format": marked and answer is not None,
                        "mr1_bank_size": len(bank),
                        "mr1_reply": text.strip(),
                    },
                )
            )
        return trajectories

    def rollout_metrics(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """Operation rates (per operation over all operations; absent when no plan had one), invalid-plan rate,
        answer format rate, bank size."""
        metrics: dict[str, float] = {}
        managed = [t.extras for t in trajectories if "mr1_ops" in t.extras]
        if managed:
            total = sum(sum(x["mr1_ops"].values()) for x in managed)
            for op in OPS if total else ():  # no operation at all: the shares are undefined, not 0
                metrics[f"ops/{op.lower()}_rate"] = sum(x["mr1_ops"][op] for x in managed) / total
            metrics["ops/invalid_rate"] = sum(not x["mr1_format"] for x in managed) / len(managed)
            metrics["ops/per_turn"] = total / len(managed)
        answered = [t.extras for t in trajectories if "mr1_reply" in t.extras]
        if answered:
            metrics["answer/format_rate"] = sum(bool(x["mr1_format"]) for x in answered) / len(answered)
        sizes = [t.extras["mr1_bank_size"] for t in trajectories if "mr1_bank_size" in t.extras]
        if sizes:
            metrics["memory/bank_size"] = sum(sizes) / len(sizes)
        return metrics
