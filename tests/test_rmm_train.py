"""Two-step CPU runs of both RMM reranker variants, and evaluation with retrieval recall by question type."""

from __future__ import annotations

import json

import pytest
import torch

from memfactory_cli.config import load_recipe
from memfactory_cli.workflows import train
from tests.conftest import ROOT


def _overrides(out, **extra):
    base = {
        "model.name_or_path": "tiny-qwen3-bpe",
        "data.synth": "{n_train: 4, n_eval: 2, sessions: 2, filler_turns: 1}",
        "agent.options.max_answer_tokens": "4",
        "agent.options.max_rerank_tokens": "4",
        "agent.options.top_k": "4",
        "agent.options.top_m": "2",
        "agent.options.llm_top_k": "6",
        "trainer.max_steps": "2",
        "trainer.questions_per_step": "2",
        "logging.progress": "false",
        "output.dir": str(out),
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


RECIPE = str(ROOT / "recipes" / "rmm_tiny_cpu.yaml")


def test_linear_variant_two_steps_saves_a_loadable_reranker(tmp_path):
    run_dir = train.run(RECIPE, _overrides(tmp_path / "lin", **{"trainer.eval_before_after": "true"}))
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert {"reranker/updates", "reranker/skipped", "retrieval/recall@k", "retrieval/recall@m", "bank/size"} <= set(lines[0])
    # a random model writes no citations: no update, and then no reward figure at all (it used to read 0.0)
    assert all(("reranker/reward" in x) == (x["reranker/updates"] > 0) for x in lines)
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # its own loop draws the curves too
    state = torch.load(run_dir / "final" / "reranker.pt", weights_only=True)
    assert state["dim"] == 384 and state["w_q"].shape == (384, 384)
    assert not (run_dir / "final" / "model.safetensors").exists()  # the LLM is frozen: nothing of it is saved
    summary = json.loads((run_dir / "eval_before_after.json").read_text())
    assert {"em", "f1", "recall@k", "recall@m"} <= set(summary["after"])
    groups = summary["after_by_group"]["groups"]
    assert summary["after_by_group"]["by"] == "question_type" and groups
    assert set(groups) <= {"single-session-user", "knowledge-update"} and "recall@m" in next(iter(groups.values()))["metrics"]
    rollouts = [json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert rollouts and "kept" in rollouts[0] and "retrieval" in rollouts[0]


def test_llm_variant_two_grpo_steps_on_the_rerank_turn(tmp_path):
    cfg = load_recipe(RECIPE, _overrides(tmp_path / "llm", **{"agent.reranker": "llm"}))
    assert train.learner(cfg) == "grpo"  # through MemGRPOTrainer
    run = train.build(cfg)
    run.trainer.train()
    lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert {"rewards/rmm_format/mean", "rewards/rmm_accuracy/mean", "rewards/rmm_citation/mean", "retrieval/recall@k"} <= set(lines[-1])
    assert lines[-1]["turns/mean"] == 1.0 and lines[-1]["rows"] == 4.0  # one rerank row per trajectory


def test_gpu_recipe_on_a_cpu_machine_fails_fast(tmp_path):
    import pytest

    from memfactory_cli.errors import UserError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        train.run(str(ROOT / "recipes" / "rmm_qwen3_1.7b.yaml"), [f"output.dir={tmp_path}"])


def test_memfactory_eval_reports_recall_by_question_type_and_guards_the_reranker(tmp_path):
    import pytest

    from memfactory_cli.errors import UserError
    from memfactory_cli.workflows import eval_sets

    overrides = _overrides(tmp_path / "unused", **{"agent.reranker": "none"})
    (entry,) = eval_sets.run(["rmm_synth_eval"], RECIPE, overrides, out=str(tmp_path / "eval"), progress=lambda *_: None)
    assert {"em", "f1", "recall@k", "recall@m"} <= set(entry["metrics"])
    assert entry["by_group"]["by"] == "question_type"
    records = [json.loads(x) for x in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert all("recall@m" in r["scores"] and r["kept"] is not None for r in records)
    with pytest.raises(UserError, match="different agent settings"):
        eval_sets.run(["rmm_synth_eval"], RECIPE, _overrides(tmp_path / "unused"), out=str(tmp_path / "eval"))


def test_memfactory_eval_online_reports_the_running_recall(tmp_path):
    from memfactory_cli.workflows import eval_sets

    overrides = _overrides(tmp_path / "unused", **{"agent.options.online": "true"})
    (entry,) = eval_sets.run(["rmm_synth_eval"], RECIPE, overrides, out=str(tmp_path / "eval"), progress=lambda *_: None)
    report = entry["agent_report"]
    assert report["online"] and report["scored"] == entry["n"] and report["running_recall@m"][-1]["n"] == entry["n"]
    assert report["running_recall@m"][-1]["recall@m"] == pytest.approx(entry["metrics"]["recall@m"]["mean"])
