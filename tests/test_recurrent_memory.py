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
    messages = update_messages(one_shot=False)
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
