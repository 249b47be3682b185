import json

import pytest
import torch

from memfactory_cli.config import load_recipe
from memfactory_cli.trainer.config import batch_layout
from memfactory_cli.workflows import train
from tests.conftest import tiny_overrides


def _build(tmp_path, sink=None, **extra):
    overrides = tiny_overrides(tmp_path / "run", **{"rewards": "[{name: 'tests.helpers:length_reward'}]", **extra})
    return train.build(load_recipe(None, overrides), rollout_sink=sink)


def _completion_logp(model, prompt_ids, completion_ids):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
    return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(completion_ids)[:, None]).sum().item()


def test_k_chunks_give_k_plus_one_rows_sharing_one_advantage(tmp_path):
    run = _build(
        tmp_path,
        **{
            "trainer.num_generations": "3",
            "trainer.gradient_accumulation_steps": "2",
            "trainer.questions_per_step": "2",
            "trainer.skip_zero_advantage_rows": "false",  # this test reads every row's place
        },
    )
    trainer = run.trainer
    trainer.model.train()
    dataset = trainer.train_dataset
    inputs = [dict(dataset[i]) for i in (0, 0, 0, 1, 1, 1)]
    out = trainer._generate_and_score_completions(inputs)
    trajectories = trainer._trajectories
    n_slots, n_real = len(trajectories), sum(len(t.turns) for t in trajectories)
    assert n_real > 2 * n_slots, "documents must span several chunks"
    assert out["prompt_ids"].size(0) == n_real + (n_real % 2)  # padded to a multiple of S=2
    finals = out["advantages"][:n_slots]
    assert finals.abs().sum() > 0
    row = n_slots
    for slot, traj in enumerate(trajectories):
        k = len(run.agent.memory.chunks(traj.episode.context_ids))
        assert len(traj.turns) == k + 1
        for turn in traj.turns[:-1]:
            assert out["advantages"][row] == finals[slot]
            prompt = out["prompt_ids"][row][out["prompt_mask"][row].bool()].tolist()
            completion = out["completion_ids"][row][out["completion_mask"][row].bool()].tolist()
            assert prompt == turn.prompt_ids and completion == turn.completion_ids  # the exact sampled context
            row += 1
    padding = out["completion_mask"][n_real:]
    assert padding.sum() == 0 and out["advantages"][n_real:].abs().sum() == 0
    assert int(out["num_items_in_batch"]) == sum(len(t.completion_ids) for tr in trajectories for t in tr.turns)


def test_memory_rows_alone_move_memory_turns_along_their_advantage(tmp_path):
    """A gradient step on the memory-update rows only (answer rows masked out) changes the memory turns' log-probs,
    in the direction of each trajectory's advantage: the memory turns are trained, not only the answer."""
    run = _build(tmp_path, **{"trainer.num_generations": "4", "trainer.skip_zero_advantage_rows": "false"})
    trainer, model = run.trainer, run.trainer.model
    model.train()
    out = trainer._generate_and_score_completions([dict(trainer.train_dataset[i]) for i in (0, 0, 0, 0, 1, 1, 1, 1)])
    trajectories = trainer._trajectories
    slots = len(trajectories)
    out["completion_mask"][:slots] = 0
    out["num_items_in_batch"] = out["completion_mask"].sum()
    turns = [(slot, turn) for slot, traj in enumerate(trajectories) for turn in traj.turns[:-1]]
    model.eval()
    before = [_completion_logp(model, turn.prompt_ids, turn.completion_ids) for _, turn in turns]
    model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by train(); this test steps by hand
    trainer.compute_loss(model, out).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    model.eval()
    after = [_completion_logp(model, turn.prompt_ids, turn.completion_ids) for _, turn in turns]
    advantages = out["advantages"][:slots].tolist()
    assert any(abs(a - b) > 1e-6 for a, b in zip(after, before))
    signal = sum(advantages[slot] * (a - b) for (slot, _), a, b in zip(turns, after, before))
    assert signal > 0


def test_training_run_writes_metrics_rollouts_and_a_loadable_final(tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    overrides = tiny_overrides(out, **{"trainer.max_steps": "2", "rewards": "[{name: 'tests.helpers:length_reward'}]"})
    run = train.build(load_recipe(None, overrides))
    assert run.trainer.rollout_sink.mirrors == []  # logging.swanlab=disabled: no SwanLab trace mirror either
    run.trainer.train()
    final = train.save_final(run)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    required = {"step", "reward/mean", "reward/std", "loss", "rows", "trajectories", "turns/mean", "time/generate_s", "time/update_s"}
    assert required <= set(lines[0])
    assert lines[0]["rows"] > lines[0]["trajectories"] == 4
    assert {"retention/final", "retention/seen"} <= set(lines[0])  # None when no document showed its answer
    assert lines[0]["retention/seen"] is not None
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert rollouts and {"chunks", "memories", "answer", "reward", "step"} <= set(rollouts[0])
    assert len(rollouts[0]["chunks"]) == len(rollouts[0]["memories"]) > 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # drawn at each logged step
    assert load_recipe(out / "config.yaml") == run.cfg
    reloaded = AutoModelForCausalLM.from_pretrained(final).state_dict()
    trained = run.trainer.model.state_dict()
    assert reloaded.keys() == trained.keys()
    assert all(torch.equal(reloaded[k], trained[k]) for k in trained)


@pytest.mark.parametrize(
    "override,match",
    [
        ("trainer.num_generations=1", "num_generations must be >= 2"),
        ("trainer.questions_per_step=3", "split evenly"),
        ("trainer.max_steps=0", "max_steps must be positive"),
    ],
)
def test_batch_arithmetic_errors(override, match):
    from memfactory_cli.errors import UserError

    cfg = load_recipe(None, ["trainer.gradient_accumulation_steps=2", "trainer.num_generations=3", override])
    with pytest.raises(UserError, match=match):
        batch_layout(cfg)


def test_kl_and_several_iterations_cover_memory_rows(tmp_path):
    """beta > 0 and num_iterations > 1 make TRL want reference and old log-probs for every row."""
    run = _build(
        tmp_path,
        **{"trainer.beta": "0.04", "trainer.num_iterations": "2", "trainer.gradient_accumulation_steps": "2", "trainer.max_steps": "2"},
    )
    trainer = run.trainer
    trainer.model.train()
    inputs = [dict(trainer.train_dataset[i]) for i in (0, 0, 1, 1)]
    out = trainer._generate_and_score_completions(inputs)
    n = out["prompt_ids"].size(0)
    for key in ("old_per_token_logps", "ref_per_token_logps"):
        assert out[key].shape == out["completion_ids"].shape
        real = out["completion_mask"].bool()
        assert torch.isfinite(out[key][real]).all() and (out[key][real] < 0).all()
    # Before any update the policy is the reference: old == ref on every real token, memory rows included.
    assert torch.allclose(out["old_per_token_logps"][real], out["ref_per_token_logps"][real], atol=1e-5)
    assert n > 4
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("kl" in line for line in lines)


def test_lora_trains_adapters_only(tmp_path):
    run = _build(tmp_path, **{"model.lora.enabled": "true", "model.lora.r": "4", "trainer.learning_rate": "1e-2"})
    trainable = [n for n, p in run.trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    run.trainer.train()
    final = train.save_final(run)
    assert (final / "adapter_config.json").exists()


def test_training_rollouts_use_the_shared_prefill(tmp_path, monkeypatch):
    import memfactory_cli.trainer.grpo as grpo

    calls = []
    real = grpo.prefill_cache

    def counting(model, input_ids, attention_mask, pad_id):
        calls.append(input_ids.size(0))
        return real(model, input_ids, attention_mask, pad_id)

    monkeypatch.setattr(grpo, "prefill_cache", counting)
    run = _build(tmp_path, **{"trainer.num_generations": "2"})
    trainer = run.trainer
    trainer._generate_and_score_completions([dict(trainer.train_dataset[i]) for i in (0, 0, 1, 1)])
    turns = max(len(t.turns) for t in trainer._trajectories)
    assert calls and len(calls) == turns and calls[0] == 4  # one shared prefill per generate call
    assert "generate" not in vars(trainer.accelerator.unwrap_model(trainer.model_wrapped))  # the shadow is removed


def test_skipping_zero_advantage_rows_leaves_the_gradient_unchanged(tmp_path):
    from transformers import TrainerCallback

    class GradientCapture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    grads, metrics = {}, {}
    for skip in (True, False):
        run = _build(
            tmp_path / str(skip),
            **{
                "rewards": "[{name: 'tests.helpers:half_tied_length_reward'}]",
                "trainer.skip_zero_advantage_rows": str(skip).lower(),
                "trainer.questions_per_step": "4",
                "trainer.gradient_accumulation_steps": "2",
            },
        )
        assert run.trainer.skips_zero_advantage_rows is skip
        capture = GradientCapture()
        run.trainer.add_callback(capture)
        run.trainer.train()
        grads[skip] = capture.grads
        metrics[skip] = json.loads((tmp_path / str(skip) / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics[True]["rows"] == metrics[False]["rows"] == metrics[False]["rows/trained"]
    assert 0 < metrics[True]["rows/trained"] < metrics[True]["rows"], "the step must mix tied and untied groups"
    assert grads[True].keys() == grads[False].keys() and any(g.abs().sum() > 0 for g in grads[False].values())
    for name, g in grads[False].items():
        assert torch.allclose(grads[True][name], g, rtol=1e-4, atol=1e-8), name


def test_kl_keeps_zero_advantage_rows(tmp_path):
    run = _build(tmp_path, **{"trainer.beta": "0.04"})
    assert not run.trainer.skips_zero_advantage_rows


def test_before_after_eval_reports_retention(tmp_path, capsys):
    out = tmp_path / "run"
    overrides = tiny_overrides(out, **{"trainer.eval_before_after": "true", "rewards": "[{name: 'tests.helpers:length_reward'}]"})
    train.run(None, overrides)
    summary = json.loads((out / "eval_before_after.json").read_text())
    before, after = summary["retention"]["before"], summary["retention"]["after"]
    assert before["trajectories"] == after["trajectories"] == 4  # data.synth.n_eval questions, one greedy sample each
    assert {"final", "seen", "per_chunk", "first_seen"} <= set(before)
    assert "retention (final)" in capsys.readouterr().out  # the before/after table
    assert json.loads((out / "eval_before.json").read_text())["retention"] == before


class _OtherRankHas:
    """An accelerator whose other rank holds ``rows`` memory rows: gather returns both ranks' counts."""

    def __init__(self, rows: int):
        self.rows = rows

    def gather(self, t):
        return torch.cat([t, torch.tensor([self.rows])])


@pytest.mark.parametrize("local,other", [(2, 6), (0, 3), (6, 2)])
def test_memory_row_logprobs_run_as_many_rows_as_the_fullest_rank(local, other):
    """Under ZeRO-3/FSDP each forward is a collective: a rank with fewer memory rows (shorter documents) pads to the
    agreed count before the log-prob pass (C4), and keeps only its own rows' results."""
    from memfactory_cli.agents.base import Episode, Trajectory, Turn
    from memfactory_cli.trainer.grpo import MemGRPOTrainer

    trainer = MemGRPOTrainer.__new__(MemGRPOTrainer)
    trainer.accelerator = _OtherRankHas(other)
    trainer._tokenizer = type("Tok", (), {"pad_token_id": 0})()
    trainer._trajectories = [Trajectory(Episode.__new__(Episode), [Turn("answer", [5, 6, 7], [8, 9], True)])]
    seen = []

    def memory_logps(which, ids, mask, keep):
        seen.append((which, ids.size(0), keep))
        return torch.arange(ids.size(0) * keep, dtype=torch.float).view(ids.size(0), keep)

    trainer._memory_logps = memory_logps
    prompts = [[1, 2, 3 + i] for i in range(local)]
    completions = [[4, 4 + i][: 1 + i % 2] for i in range(local)]
    out = {"old_per_token_logps": None, "ref_per_token_logps": torch.zeros(1)}
    logps = trainer._memory_row_logps(out, prompts, completions, torch.device("cpu"))
    assert [s[:2] for s in seen] == [("ref", max(local, other))], "one pass, as many rows as the fullest rank"
    assert set(logps) == {"ref_per_token_logps"} and logps["ref_per_token_logps"].size(0) == local
