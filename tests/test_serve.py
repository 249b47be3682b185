"""`memfactory serve`: real HTTP on 127.0.0.1, the memory agent and the bare model, and 4xx JSON errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from memfactory_cli.agents.memagent import MemAgent
from memfactory_cli.generation.base import SamplingParams
from memfactory_cli.workflows.serve import Message, ServerThread, Service, create_app, split_document
from tests.conftest import ROOT

MODULES = {"memory": {"name": "recurrent_memory", "chunk_size": 32, "max_memory_tokens": 6, "max_chunks": 4, "max_answer_tokens": 5}}
TIMEOUT = 60


def call(url: str, body: bytes | dict | None = None, method: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture()
def server(model, tokenizer):
    def start(mode: str):
        service = Service("tiny", mode, model, tokenizer, MemAgent(tokenizer, MODULES), SamplingParams(do_sample=False))
        return ServerThread(create_app(service))

    return start


def test_the_agent_reads_a_long_message_chunk_by_chunk_over_real_http(server, tokenizer):
    document = "Ada Reed lives in Oslo. The pier lantern was repainted on Friday. " * 12
    n_chunks = -(-len(tokenizer(document.strip(), add_special_tokens=False)["input_ids"]) // 32)
    with server("agent") as base:
        assert base.startswith("http://127.0.0.1:")
        status, models = call(f"{base}/models")
        assert status == 200 and [m["id"] for m in models["data"]] == ["tiny"]
        body = {"model": "tiny", "messages": [{"role": "user", "content": f"{document}\n\nWhere does Ada Reed live?"}], "max_tokens": 4}
        status, reply = call(f"{base}/chat/completions", body)
    assert status == 200, reply
    assert reply["object"] == "chat.completion" and isinstance(reply["choices"][0]["message"]["content"], str)
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    assert len(reply["memfactory"]["memories"][0]) == min(n_chunks, 4) > 1
    assert reply["memfactory"]["turns"] == [min(n_chunks, 4) + 1]
    assert reply["usage"]["completion_tokens"] <= min(n_chunks, 4) * 6 + 4  # memory budget per chunk + max_tokens


def test_the_bare_model_answers_n_choices(server):
    with server("model") as base:
        body = {"model": "tiny", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "n": 2, "max_tokens": 3, "temperature": 0.8}
        status, reply = call(f"{base}/chat/completions", body)
    assert status == 200, reply
    assert [c["index"] for c in reply["choices"]] == [0, 1] and reply["usage"]["completion_tokens"] <= 6
    assert "memories" not in reply["memfactory"]


@pytest.mark.parametrize(
    "body,status,match",
    [
        (b"{not json", 400, "JSON"),
        ({"model": "tiny"}, 400, "messages"),
        ({"model": "tiny", "messages": []}, 400, "messages"),
        ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": True}, 400, "stream"),
        ({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}, 404, "does not exist"),
        ({"model": "tiny", "messages": [{"role": "assistant", "content": "x"}]}, 400, "last message"),
        ([1, 2], 400, "body"),
    ],
)
def test_malformed_requests_get_a_4xx_json_error_and_the_server_lives_on(server, body, status, match):
    with server("agent") as base:
        got, reply = call(f"{base}/chat/completions", body if not isinstance(body, list) else json.dumps(body).encode())
        assert got == status, reply
        assert reply["error"]["type"] and match.lower() in reply["error"]["message"].lower(), reply
        assert call(f"{base}/nowhere")[0] == 404 and "error" in call(f"{base}/nowhere")[1]
        assert call(f"{base}/models", method="DELETE")[0] == 405
        assert call(f"{base}/models")[0] == 200


def test_split_document_takes_the_last_paragraph_as_the_question():
    msgs = [Message(role="system", content="sys"), Message(role="user", content="earlier"), Message(role="user", content="doc a\n\ndoc b\n\nQ?")]
    assert split_document(msgs) == ("earlier\n\ndoc a\n\ndoc b", "Q?")
    assert split_document([Message(role="user", content=[{"type": "text", "text": "just a question"}])]) == ("", "just a question")


def test_serve_command_listens_on_loopback(tmp_path):
    cmd = [sys.executable, "-m", "memfactory_cli", "serve", "--model", "tiny-qwen3-bpe", "--port", "0", "--name", "t", "trainer.device=cpu"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    try:
        deadline, line = time.monotonic() + 120, ""
        while "serving" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline
        base = line.split(" at ")[-1].strip()
        assert base.startswith("http://127.0.0.1:")
        status, models = call(f"{base}/models")
        assert status == 200 and models["data"][0]["id"] == "t"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
