"""A new agent through the public contract alone (no package edit): registered, trained one step, serving a request.

The toy agent answers from the first ``window`` tokens of the document in one turn; its "memory" is that window.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

from memfactory_cli.agents.base import BaseAgent, Episode, Trajectory, Turn
from memfactory_cli.config import load_recipe
from memfactory_cli.modules.text import chat_ids, stop_ids
from memfactory_cli.registry import register


@dataclass
class ToyConfig:
    window: int = 32
    max_answer_tokens: int = 6
    enable_thinking: bool = False


@register("agent", "toy_window")
class ToyWindowAgent(BaseAgent):
    name = "toy_window"
    Config = ToyConfig

    @property
    def max_completion_tokens(self) -> int:
        return self.config.max_answer_tokens

    def rollout(self, episodes: list[Episode], generator) -> list[Trajectory]:
        windows = [self.tokenizer.decode(self.tokenizer(e.row["context"])["input_ids"][: self.config.window]) for e in episodes]
        prompts = [chat_ids(self.tokenizer, f"{w}\n\n{e.row['question']}") for w, e in zip(windows, episodes)]
        completions = generator.generate(prompts, self.config.max_answer_tokens)
        stops = stop_ids(self.tokenizer)
        out = []
        for e, w, p, c in zip(episodes, windows, prompts, completions):
            text = self.tokenizer.decode(c, skip_special_tokens=True).strip()
            out.append(Trajectory(e, [Turn("answer", p, c, bool(c) and c[-1] in stops, text=text)], memories=[w]))
        return out


OVERRIDES = [
    "agent.name=toy_window", "agent.options.window=24", "model.name_or_path=tiny-qwen3-bpe", "trainer.device=cpu",
    "trainer.bf16=false", "trainer.max_steps=1", "trainer.questions_per_step=2", "trainer.num_generations=2",
    "data.synth.n_train=4", "data.synth.n_eval=2", "logging.swanlab=disabled", "logging.progress=false",
]  # fmt: skip


def test_a_toy_agent_registers_trains_one_step_and_serves(tmp_path):
    from memfactory_cli.workflows import serve, train

    overrides = [*OVERRIDES, f"output.dir={tmp_path / 'run'}"]
    run = train.build(load_recipe(None, overrides))
    assert isinstance(run.agent, ToyWindowAgent) and run.agent.config.window == 24
    run.trainer.train()
    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["step"] == 1 and line["rows"] == 4.0  # one answer row per trajectory

    service = serve.build_service(None, overrides, None, "agent", "toy")
    body = {"model": "toy", "messages": [{"role": "user", "content": "Ada lives in Oslo.\n\nWhere does Ada live?"}]}
    with serve.ServerThread(serve.create_app(service)) as base:
        request = urllib.request.Request(f"{base}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            reply = json.loads(response.read())
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    assert reply["memfactory"]["memories"] == [["Ada lives in Oslo."]]
