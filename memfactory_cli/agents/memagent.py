"""MemAgent: read a document chunk by chunk, overwrite a bounded memory each turn, then answer from the memory.

All trajectories advance together: turn k of every still-reading trajectory (across all questions and all G samples)
is one generate call; trajectories whose document ran out drop out, and all answers are one final call.
"""

from __future__ import annotations

from typing import Any

from memfactory_cli.agents.base import BaseAgent, Episode, NoOptions, Trajectory, Turn
from memfactory_cli.generation.base import Generator
from memfactory_cli.registry import register


@register("agent", "memagent")
class MemAgent(BaseAgent):
    """Recurrent-memory agent. Module slot: ``memory`` (family ``recurrent_memory``)."""

    name = "memagent"
    slots = {"memory": "recurrent_memory"}
    defaults = {"memory": {"name": "recurrent_memory"}}
    trace_title = "memory after chunk {i}/{n}"

    def __init__(self, tokenizer: Any, modules: dict[str, dict[str, Any]] | None = None, config: NoOptions | None = None):
        super().__init__(tokenizer, modules, config)
        self.memory = self.module("memory")

    def answer_settings(self) -> Any:
        return self.memory.config

    @property
    def max_completion_tokens(self) -> int:
        return max(self.memory.config.max_memory_tokens, self.memory.config.max_answer_tokens)

    def check_budget(self, model_max_len: int, question_tokens: int = 0) -> list[str]:
        """Problems with the token budgets: each turn's prompt plus its completion must fit the model's context."""
        m, c = self.memory, self.memory.config
        memory = max(c.max_memory_tokens, len(m.initial_memory))
        update = {"chunk": c.chunk_size, "memory": memory, "new memory": c.max_memory_tokens}
        turns = {
            "an update turn": (m.update_template.literal_tokens, update),
            "the answer turn": (m.final_template.literal_tokens, {"memory": memory, "answer": c.max_answer_tokens}),
        }
        problems = []
        for turn, (template, parts) in turns.items():
            parts = {"template": template, "question": question_tokens, **parts}
            total = sum(parts.values())
            if total > model_max_len:
                detail = " + ".join(f"{name} {n}" for name, n in parts.items() if n)
                problems.append(
                    f"agent.modules.memory: {turn} needs {total} tokens ({detail}) but the model's context is "
                    f"{model_max_len}; lower chunk_size, max_memory_tokens or max_answer_tokens"
                )
        return problems

    def expected_rows(self, episode: Episode) -> int:
        """Training rows one trajectory of ``episode`` gives: one per chunk plus the answer."""
        return len(self.memory.chunks(episode.context_ids)) + 1

    def episodes(self, rows: list[dict[str, Any]]) -> list[Episode]:
        """Tokenise questions and documents in two batched calls."""
        if not rows:
            return []
        enc = self.tokenizer([r["question"] for r in rows] + [r["context"] for r in rows], add_special_tokens=False)
        ids = enc["input_ids"]
        return [Episode(row, ids[i], ids[len(rows) + i]) for i, row in enumerate(rows)]

    def rollout(self, episodes: list[Episode], generator: Generator) -> list[Trajectory]:
        m = self.memory
        chunks = [m.chunks(e.context_ids) for e in episodes]
        memory = [m.initial_memory for _ in episodes]
        memory_trace: list[list[list[int]]] = [[] for _ in episodes]
        trajectories = [Trajectory(episode=e) for e in episodes]
        for k in range(max((len(c) for c in chunks), default=0)):
            active = [i for i, c in enumerate(chunks) if k < len(c)]
            prompts = [m.update_prompt(episodes[i].question_ids, memory[i], chunks[i][k]) for i in active]
            completions = generator.generate(prompts, m.config.max_memory_tokens)
            for i, prompt, completion in zip(active, prompts, completions):
                trajectories[i].turns.append(Turn("memory_update", prompt, completion, m.finished(completion)))
                memory[i] = m.next_memory(memory[i], completion)
                memory_trace[i].append(memory[i])
        prompts = [m.final_prompt(e.question_ids, memory[i]) for i, e in enumerate(episodes)]
        completions = generator.generate(prompts, m.config.max_answer_tokens)
        for traj, prompt, completion in zip(trajectories, prompts, completions):
            traj.turns.append(Turn("answer", prompt, completion, m.finished(completion)))
        self._decode(trajectories, memory_trace, chunks)
        return trajectories

    def _decode(self, trajectories: list[Trajectory], memory_trace: list[list[list[int]]], chunks: list[list[list[int]]]) -> None:
        """Fill turn texts, the memory trace and the chunks read with one batched decode."""
        seqs = [t.completion_ids for traj in trajectories for t in traj.turns] + [m for trace in memory_trace for m in trace]
        seqs += [c for per_doc in chunks for c in per_doc]
        texts = iter(self.tokenizer.batch_decode(seqs, skip_special_tokens=True))
        for traj in trajectories:
            for turn in traj.turns:
                turn.text = next(texts).strip()
        for traj, trace in zip(trajectories, memory_trace):
            traj.memories = [next(texts).strip() for _ in trace]
        for traj, per_doc in zip(trajectories, chunks):
            traj.chunks = [next(texts).strip() for _ in per_doc]
