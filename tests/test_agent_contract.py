"""Every shipped agent answers one ``serve`` request and one ``infer`` call through the agent contract alone."""

from __future__ import annotations

import json
import urllib.request

import pytest

from memfactory_cli.workflows import infer, serve
from tests.conftest import ROOT

RECIPES = {
    "memagent": "recipes/memagent_tiny_cpu.yaml",
    "memory_r1": "recipes/memory_r1_tiny_cpu.yaml",
    "rmm": "recipes/rmm_tiny_cpu.yaml",
}
CONVERSATION = (
    "Alice: I moved to Lisbon last spring.\nBob: Nice, I am still in Oslo.\n\n"
    "Alice: My sister Ada visited me in Lisbon.\nBob: I ran a marathon in Boston."
)
QUESTION = "Where does Alice live?"


def _overrides(tmp_path) -> list[str]:
    return ["model.name_or_path=tiny-qwen3-bpe", "trainer.device=cpu", f"output.dir={tmp_path / 'run'}"]


@pytest.mark.parametrize("agent", list(RECIPES))
def test_serve_answers_one_request_for_every_shipped_agent(agent, tmp_path):
    service = serve.build_service(str(ROOT / RECIPES[agent]), _overrides(tmp_path), None, "agent", None)
    body = {"model": service.name, "messages": [{"role": "user", "content": f"{CONVERSATION}\n\n{QUESTION}"}], "max_tokens": 4}
    with serve.ServerThread(serve.create_app(service)) as base:
        request = urllib.request.Request(
            f"{base}/chat/completions", json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, reply = response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            status, reply = exc.code, json.loads(exc.read())
    assert status == 200, reply
    (choice,) = reply["choices"]
    assert isinstance(choice["message"]["content"], str) and choice["finish_reason"] in ("stop", "length")
    assert isinstance(reply["memfactory"]["memories"][0], list)  # the memory trace of the answer
    assert reply["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("agent", list(RECIPES))
def test_infer_answers_one_document_for_every_shipped_agent(agent, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text(CONVERSATION, encoding="utf-8")
    record = infer.run(str(ROOT / RECIPES[agent]), _overrides(tmp_path), str(doc), QUESTION, references=["Lisbon"])
    assert record["question"] == QUESTION and isinstance(record["answer"], str)
    assert isinstance(record["memories"], list)
    assert set(record["scores"]) >= {"em", "f1"}
