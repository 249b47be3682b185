import pytest

from memfactory_cli.agents.memagent import MemAgent
from memfactory_cli.config.schema import DataConfig
from memfactory_cli.data.sources import load_rows
from memfactory_cli.errors import UserError
from memfactory_cli.generation.base import HFGenerator, SamplingParams

MODULES = {"memory": {"name": "recurrent_memory", "chunk_size": 24, "max_memory_tokens": 6, "max_chunks": 4, "max_answer_tokens": 5}}


@pytest.fixture()
def rows():
    # Documents of different lengths, so trajectories read different numbers of chunks.
    cfg = DataConfig(synth={"n_eval": 6, "filler_sentences": 2})
    out = load_rows("synth_eval", cfg)
    for i, row in enumerate(out):
        row["context"] = row["context"][: 60 + 45 * i]
    return out


def test_batched_rollout_equals_per_trajectory_rollout(tokenizer, model, rows):
    agent = MemAgent(tokenizer, MODULES)
    generator = HFGenerator(model, tokenizer, SamplingParams(do_sample=False))
    episodes = agent.episodes(rows)
    batched = agent.rollout(episodes, generator)
    single = [agent.rollout([e], generator)[0] for e in episodes]
    assert len({len(t.turns) for t in batched}) > 1, "the fixture must exercise different trajectory lengths"
    for b, s in zip(batched, single, strict=True):
        assert [t.prompt_ids for t in b.turns] == [t.prompt_ids for t in s.turns]
        assert [t.completion_ids for t in b.turns] == [t.completion_ids for t in s.turns]
        assert b.memories == s.memories and b.answer == s.answer


def test_one_generate_call_per_turn_index(tokenizer, model, rows):
    agent = MemAgent(tokenizer, MODULES)
    inner = HFGenerator(model, tokenizer, SamplingParams(do_sample=False))
    calls = []

    class Counting:
        def generate(self, prompts, max_new_tokens):
            calls.append((len(prompts), max_new_tokens))
            return inner.generate(prompts, max_new_tokens)

    trajectories = agent.rollout(agent.episodes(rows), Counting())
    k_max = max(len(t.turns) for t in trajectories) - 1
    assert len(calls) == k_max + 1
    assert calls[0][0] == len(rows) and calls[-1] == (len(rows), 5)
    assert [n for n, _ in calls[:-1]] == sorted([n for n, _ in calls[:-1]], reverse=True)


def test_trajectory_shape(tokenizer, model, rows):
    agent = MemAgent(tokenizer, MODULES)
    (traj,) = agent.rollout(agent.episodes(rows[:1]), HFGenerator(model, tokenizer, SamplingParams(do_sample=False)))
    k = len(agent.memory.chunks(traj.episode.context_ids))
    assert [t.kind for t in traj.turns] == ["memory_update"] * k + ["answer"]
    assert len(traj.memories) == k
    assert all(len(t.completion_ids) <= 6 for t in traj.turns[:-1])
    record = traj.to_record()
    assert record["memories"] == traj.memories and record["answers"] == rows[0]["answers"]


def test_unknown_slot_and_module_are_clear_errors(tokenizer):
    with pytest.raises(UserError, match="no such slot"):
        MemAgent(tokenizer, {"retriever": {"name": "bm25"}})
    with pytest.raises(UserError, match="unknown recurrent_memory 'recurent_memory'"):
        MemAgent(tokenizer, {"memory": {"name": "recurent_memory"}})
    with pytest.raises(UserError, match=r"unknown key 'agent.modules.memory.chunk_sise'.*chunk_size"):
        MemAgent(tokenizer, {"memory": {"name": "recurrent_memory", "chunk_sise": 3}})


def test_chunks_are_the_decoded_chunks_each_memory_step_read(tokenizer, model, rows):
    agent = MemAgent(tokenizer, MODULES)
    trajectories = agent.rollout(agent.episodes(rows), HFGenerator(model, tokenizer, SamplingParams(do_sample=False)))
    for traj in trajectories:
        ids = agent.memory.chunks(traj.episode.context_ids)
        assert traj.chunks == [tokenizer.decode(c, skip_special_tokens=True).strip() for c in ids]
        assert len(traj.chunks) == len(traj.memories) == len(traj.turns) - 1
        assert traj.to_record()["chunks"] == traj.chunks
