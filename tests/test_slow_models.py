"""Real-model checks, run by `make test-slow` (minutes, not seconds)."""

import pytest

pytestmark = pytest.mark.slow


def test_smollm2_converts_and_boxes_an_answer_with_the_one_shot_prompt():
    from memfactory_cli.agents.memagent import MemAgent
    from memfactory_cli.config.schema import DataConfig, ModelConfig
    from memfactory_cli.data.sources import load_rows
    from memfactory_cli.generation.base import HFGenerator, SamplingParams
    from memfactory_cli.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(ModelConfig(name_or_path="smollm2-135m-instruct"))
    agent = MemAgent(tok, {"memory": {"name": "recurrent_memory", "chunk_size": 64, "max_memory_tokens": 32, "max_chunks": 2, "max_answer_tokens": 32, "one_shot": "final"}})
    rows = load_rows("synth_eval", DataConfig(synth={"n_eval": 8, "people": 3, "filler_sentences": 4}))
    trajectories = agent.rollout(agent.episodes(rows), HFGenerator(model.eval(), tok, SamplingParams(do_sample=False)))
    assert sum("\\boxed{" in t.answer for t in trajectories) >= 6
    assert all(len(t.memories) == 2 for t in trajectories)
