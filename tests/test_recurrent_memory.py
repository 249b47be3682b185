import pytest

from memfactory_cli.errors import UserError
from memfactory_cli.modules.recurrent_memory import RecurrentMemoryConfig, RecurrentMemoryModule, centre_truncate
from memfactory_cli.modules.templates import EXAMPLE, fill, update_messages


def test_centre_truncation_keeps_head_and_tail():
    ids = list(range(10))
    assert centre_truncate(ids, 4) == [0, 1, 8, 9]
    assert centre_truncate(ids, 5) == [0, 1, 7, 8, 9]
    assert centre_truncate(ids, 20) == ids


def test_long_document_is_truncated_not_asserted(tokenizer):
    module = RecurrentMemoryModule(tokenizer, RecurrentMemoryConfig(chunk_size=5, max_chunks=3))
    chunks = module.chunks(list(range(100)))
    assert [len(c) for c in chunks] == [5, 5, 5]
    assert chunks[0][:3] == [0, 1, 2] and chunks[-1][-1] == 99


def test_short_and_empty_documents(tokenizer):
    module = RecurrentMemoryModule(tokenizer, RecurrentMemoryConfig(chunk_size=4, max_chunks=3))
    assert module.chunks(list(range(6))) == [[0, 1, 2, 3], [4, 5]]
    assert module.chunks([]) == [[]]


def test_prompt_from_ids_matches_the_chat_template(tokenizer):
    module = RecurrentMemoryModule(tokenizer, RecurrentMemoryConfig(chunk_size=64))
    q, m, c = module.encode("Who?"), module.encode("No previous memory"), module.encode("Ada lives in Oslo.")
    text = tokenizer.decode(module.update_prompt(q, m, c))
    messages = update_messages(one_shot=False, template=module.config.template)
    messages[-1]["content"] = fill(messages[-1]["content"], question="Who?", memory="No previous memory", chunk="Ada lives in Oslo.")
    assert text == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert "<section>\nAda lives in Oslo.\n</section>" in text


def test_one_shot_puts_an_example_turn_first(tokenizer):
    plain = RecurrentMemoryModule(tokenizer, RecurrentMemoryConfig(one_shot="none"))
    final = RecurrentMemoryModule(tokenizer, RecurrentMemoryConfig(one_shot="final"))
    both = RecurrentMemoryModule(tokenizer, RecurrentMemoryConfig(one_shot="all"))
    q, m = plain.encode("Who?"), plain.encode("x")
    shown = lambda ids: EXAMPLE["answer"] in tokenizer.decode(ids)  # noqa: E731
    assert shown(final.final_prompt(q, m)) and shown(both.final_prompt(q, m)) and not shown(plain.final_prompt(q, m))
    example_memory = lambda ids: EXAMPLE["new_memory"] in tokenizer.decode(ids)  # noqa: E731
    assert example_memory(both.update_prompt(q, m, q)) and not example_memory(final.update_prompt(q, m, q))
    text = tokenizer.decode(both.update_prompt(q, m, q))
    assert text.index(EXAMPLE["new_memory"]) < text.index("Who?")


def test_memory_drops_eos_and_finished_means_eos(tokenizer):
    module = RecurrentMemoryModule(tokenizer, RecurrentMemoryConfig())
    eos = tokenizer.eos_token_id
    body = module.encode("Ada lives in Oslo.")
    assert module.finished(body + [eos]) and not module.finished(body)
    assert module.next_memory([1], body + [eos]) == body


def test_thinking_memory_is_the_text_after_think(tokenizer):
    module = RecurrentMemoryModule(tokenizer, RecurrentMemoryConfig(enable_thinking=True))
    done = module.encode("<think>\nhmm\n</think>\n\nAda lives in Oslo.") + [tokenizer.eos_token_id]
    assert tokenizer.decode(module.next_memory([7], done)) == "Ada lives in Oslo."
    truncated = module.encode("<think>\nstill thinking")
    assert module.next_memory([7], truncated) == [7]


@pytest.mark.parametrize("field", ["chunk_size", "max_memory_tokens", "max_chunks", "max_answer_tokens"])
def test_sizes_must_be_positive(field):
    with pytest.raises(UserError, match=field):
        RecurrentMemoryConfig(**{field: 0})


def test_templates_memagent_by_default_and_compact_by_name(tokenizer):
    from memfactory_cli.errors import UserError

    memagent = RecurrentMemoryModule(tokenizer, RecurrentMemoryConfig())
    compact = RecurrentMemoryModule(tokenizer, RecurrentMemoryConfig(template="compact"))
    q, m, c = memagent.encode("Who?"), memagent.encode("x"), memagent.encode("y")
    assert "retain all relevant details from the previous memory" in tokenizer.decode(memagent.update_prompt(q, m, c))
    assert "one to three words" not in tokenizer.decode(memagent.final_prompt(q, m))
    assert "keep only what helps" in tokenizer.decode(compact.update_prompt(q, m, c))
    import pytest

    with pytest.raises(UserError, match="template must be one of memagent, compact"):
        RecurrentMemoryConfig(template="short")


def _documents(n: int, gold: int) -> tuple[str, list[str]]:
    docs = [f"Document {i}:\nTitle {i}\nFiller sentence about topic number {i} goes on and on." for i in range(1, n + 1)]
    docs[gold - 1] = f"Document {gold}:\nOrion Vale\nOrion Vale lives in Zephyrton, a quiet town."
    return "\n\n".join(docs), docs


def test_over_long_contexts_lose_whole_distractor_documents_first(tokenizer):
    from memfactory_cli.modules.recurrent_memory import cut_documents

    context, docs = _documents(30, gold=17)
    count = lambda texts: [len(i) for i in tokenizer(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731
    limit = len(tokenizer(context)["input_ids"]) // 3
    cut = cut_documents(context, "Where does Orion Vale live?", ["Zephyrton"], limit, count)
    kept = cut.split("\n\n")
    assert docs[16] in kept  # the document holding the answer survives
    assert all(d in docs for d in kept)  # only whole documents, in their order
    assert [docs.index(d) for d in kept] == sorted(docs.index(d) for d in kept)
    assert len(tokenizer(cut)["input_ids"]) <= limit + 2 * len(kept)  # joins may add a token each
    assert cut_documents("no markers here " * 50, "q", ["a"], 5, count) == "no markers here " * 50


def test_memagent_cuts_documents_before_centre_truncation(tokenizer):
    from memfactory_cli.agents.memagent import MemAgent

    context, docs = _documents(40, gold=20)
    memory = {"chunk_size": 32, "max_chunks": 4, "template": "compact"}
    row = {"id": "0", "question": "Where does Orion Vale live?", "context": context, "answers": ["Zephyrton"]}
    read = {}
    for truncation in ("documents", "centre"):
        agent = MemAgent(tokenizer, {"memory": {**memory, "truncation": truncation}})
        chunks = agent.memory.chunks(agent.episodes([row])[0].context_ids)
        read[truncation] = tokenizer.decode([t for c in chunks for t in c])
    assert "Zephyrton" in read["documents"]  # the answer's document is read ...
    assert "Zephyrton" not in read["centre"]  # ... where centre truncation alone cuts it out of the middle


def test_a_turn_ending_in_any_generation_eos_is_finished(tokenizer, bpe_model_dir, tmp_path):
    """The stop set is the model's generation-config EOS list, as TRL and HFGenerator use (review core.md m3)."""
    import json
    import shutil

    from memfactory_cli.models.loading import load_tokenizer

    folder = tmp_path / "model"
    shutil.copytree(bpe_model_dir, folder)
    other = next(i for i in range(3, 100) if i not in (tokenizer.eos_token_id, tokenizer.pad_token_id))  # a 2nd EOS
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [tokenizer.eos_token_id, other]}))
    module = RecurrentMemoryModule(load_tokenizer(str(folder)), RecurrentMemoryConfig())
    assert module.finished([50, 60, other]) and module.next_memory([], [50, 60, other]) == [50, 60]
