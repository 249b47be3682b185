"""The one-job helpers: JSON lines and atomic paths (``io.py``), thinking, chats and stop ids (``modules/text.py``)."""

from __future__ import annotations

import pytest

from memfactory_cli.errors import UserError
from memfactory_cli.io import append_jsonl, atomic_path, cut_torn_tail, read_jsonl
from memfactory_cli.modules.text import after_thinking, chat_ids, stop_ids


def test_a_torn_last_line_is_dropped_only_when_asked_and_a_bad_line_is_named(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"a": 1}, {"b": "ü"}])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"c": ')  # a killed writer
    assert read_jsonl(path, torn_tail="drop") == [{"a": 1}, {"b": "ü"}]
    with pytest.raises(UserError, match="log.jsonl: line 3: invalid JSON"):
        read_jsonl(path)
    cut_torn_tail(path)
    append_jsonl(path, [{"d": 4}])
    assert read_jsonl(path) == [{"a": 1}, {"b": "ü"}, {"d": 4}]
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n{"b": 2}\n')
    with pytest.raises(UserError, match="line 2"):
        read_jsonl(tmp_path / "bad.jsonl", torn_tail="drop")  # not the last line: corrupt, not torn


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]


def test_after_thinking_and_chat_ids(tokenizer):
    assert after_thinking("<think>a</think> b <think>c</think>\n answer ") == "answer"
    assert after_thinking("no thinking") == "no thinking"
    text = tokenizer.decode(chat_ids(tokenizer, "Hi"))
    assert text.startswith("<|im_start|>user\nHi<|im_end|>") and "<|im_start|>assistant" in text


def test_stop_ids_join_the_tokenizer_the_generation_config_and_extra(tokenizer, bpe_model_dir):
    import json

    eos = json.loads((bpe_model_dir / "generation_config.json").read_text())["eos_token_id"]
    assert stop_ids(tokenizer) == {tokenizer.eos_token_id} | set(eos if isinstance(eos, list) else [eos])
    assert stop_ids(tokenizer, [7, None]) == stop_ids(tokenizer) | {7}
