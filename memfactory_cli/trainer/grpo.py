"""``MemGRPOTrainer``: TRL's GRPOTrainer, taught that one trajectory is several training rows.

How one generation batch flows (slots = questions x G, already repeated G times in a row by TRL's sampler):

1. ``_generate_and_score_completions`` stashes the batch and calls TRL's own implementation, which calls
   ``rollout_func`` = :meth:`_rollout`. The agent rolls out every slot through :class:`TrainerGenerator` (TRL's own
   generation path) and hands TRL each trajectory's *final* turn, plus extra fields for the rewards.
2. TRL scores the final turns with the reward functions, gathers rewards across processes and computes the group
   advantage once per trajectory, within its question's G. It also computes old/reference log-probs of those rows.
3. :meth:`_expand_rows` appends one row per memory-update turn, each with exactly the prompt ids it was sampled
   with and its trajectory's advantage, computes their old/reference log-probs when TRL needs them, pads the row
   count to a multiple of ``steps_per_generation`` (equal on every rank) with loss-masked copies, and recomputes
   ``num_items_in_batch``. Turns are never concatenated into one sequence. Rows with advantage 0 are then left out
   where that provably leaves the step's gradient unchanged (see :attr:`skips_zero_advantage_rows`).

With ``loss_type="dapo"`` (the default) the S micro-batches of a step average to the token-mean over all rows of the
step, whatever the row count of each micro-batch: this is MemAgent's token-mean loss aggregation.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import rotate_checkpoints
from trl import GRPOTrainer
from trl.trainer.utils import use_adapter

from memfactory_cli.agents.base import Trajectory
from memfactory_cli.generation.base import (
    CACHE_KWARG,
    bounded_batches,
    kv_budget_bytes,
    model_kv_bytes_per_token,
    prefill_cache,
)
from memfactory_cli.io import replace_dir
from memfactory_cli.report import retention
from memfactory_cli.trainer.checkpoints import EpochSeededSampler, staging_dir
from memfactory_cli.trainer.trl_patches import lean_cpu_logprob_tiles, score_only_completion_positions
from memfactory_cli.trainer.vllm_sync import adopt_cpu_weight_sync, cpu_engine_settings

PHASES = ("generate", "reward")


@contextmanager
def shared_prefill(model: Any, pad_id: int) -> Iterator[None]:
    """Within the block, ``model.generate`` starts from :func:`prefill_cache` (what HFGenerator does in eval).

    TRL's HF generation path left-pads and calls ``unwrapped_model.generate``; this is the one place to hand it the
    shared, unpadded prefill without copying TRL's unwrap/gather logic. An instance attribute shadows the method and
    is removed on exit.
    """
    original = model.generate

    def generate(*args: Any, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        if input_ids is not None and attention_mask is not None and kwargs.get(CACHE_KWARG) is None:
            kwargs[CACHE_KWARG] = prefill_cache(model, input_ids, attention_mask, pad_id)
        return original(*args, input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    model.generate = generate
    try:
        yield
    finally:
        del model.generate


class TrainerGenerator:
    """Generation through the trainer's own path (HF generate, or vLLM when TRL is configured for it).

    With several processes every generate call is a collective: a vLLM server gathers all ranks' prompts and slices
    the answers by equal shares, colocated vLLM with tensor parallelism gathers within its group, and ZeRO-3 / FSDP
    gather the weights. Ranks roll out different documents, so they would make different numbers of calls with
    different batch sizes. Each call therefore first agrees on the largest batch and budget over all ranks; a rank
    pads its batch with copies of a prompt, and a rank whose agent has finished keeps joining calls from
    :meth:`finish` until no rank has work left. A longer budget than asked is cut back: a sampled completion's
    prefix is exactly a sample under the shorter budget.
    """

    def __init__(self, trainer: GRPOTrainer):
        self.trainer = trainer
        self.world = trainer.accelerator.num_processes
        self._filler = [trainer._tokenizer.pad_token_id]

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        if not prompts:
            return []
        if self.world == 1:
            return self._call(prompts, max_new_tokens)
        self._filler = prompts[0]
        count, budget = self._agree(len(prompts), max_new_tokens)
        out = self._call(prompts + [prompts[0]] * (count - len(prompts)), budget)
        return [c[:max_new_tokens] for c in out[: len(prompts)]]

    def finish(self) -> None:
        """Join the other ranks' remaining calls with filler prompts (no-op with one process)."""
        while self.world > 1:
            count, budget = self._agree(0, 0)
            if count == 0:
                return
            self._call([self._filler] * count, budget)

    def _agree(self, count: int, budget: int) -> tuple[int, int]:
        local = torch.tensor([count, budget], device=self.trainer.accelerator.device)
        most = self.trainer.accelerator.gather(local).view(-1, 2).max(0).values.tolist()
        return int(most[0]), int(most[1])

    def _call(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        if self.trainer.use_vllm:
            config, field = self.trainer.vllm_generation, "max_completion_length"
        else:
            config, field = self.trainer.generation_config, "max_new_tokens"
        previous = getattr(config, field)
        setattr(config, field, max_new_tokens)
        # Sharded weights (ZeRO-3 / FSDP) are untested with the shared prefill: they keep TRL's plain path.
        trainer = self.trainer
        plain_hf = not (
            trainer.use_vllm or trainer.use_transformers_continuous_batching or trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
        )
        model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        out: list[list[int]] = [[] for _ in prompts]
        try:
            # autocast: a PeftModel's generate reaches the base model's own forward, not the one accelerate patched
            with shared_prefill(model, trainer._tokenizer.pad_token_id) if plain_hf else nullcontext(), trainer.accelerator.autocast():
                for batch in self._batches(model, prompts, max_new_tokens):
                    completion_ids, _ = trainer._generate_single_turn([prompts[i] for i in batch], None, {}, 1)
                    for i, completion in zip(batch, completion_ids):
                        out[i] = list(completion)
        finally:
            setattr(config, field, previous)
        return out

    def _batches(self, model: Any, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """The generate calls of one turn: batches whose KV cache fits the budget (one call with vLLM, which pages).

        With several processes every rank makes the same calls: the batch size is the smallest any rank needs
        (its longest prompts' batch) and every rank has the agreed prompt count, so the call count agrees too.
        """
        trainer = self.trainer
        if trainer.use_vllm:
            return [list(range(len(prompts)))]
        budget = kv_budget_bytes(trainer.args.kv_cache_budget, trainer.accelerator.device)
        if budget is None and not trainer.args.max_generate_batch:
            return [list(range(len(prompts)))]
        per_token = model_kv_bytes_per_token(model, torch.bfloat16 if trainer.args.bf16 else None)
        batches = bounded_batches([len(p) for p in prompts], max_new_tokens, per_token, budget, trainer.args.max_generate_batch)
        if self.world == 1:
            return batches
        local = torch.tensor([len(batches[0])], device=trainer.accelerator.device)
        size = int(trainer.accelerator.gather(local).min())
        order = [i for batch in batches for i in batch]
        return [order[start : start + size] for start in range(0, len(order), size)]


def _pad(seqs: list[list[int]], value: int, side: str, width: int | None = None) -> torch.Tensor:
    width = max([len(s) for s in seqs] + [width or 0])
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            if side == "left":
                out[i, width - len(s) :] = torch.tensor(s)
            else:
                out[i, : len(s)] = torch.tensor(s)
    return out


def _widen(t: torch.Tensor, width: int, value: float, side: str) -> torch.Tensor:
    extra = width - t.size(1)
    if extra <= 0:
        return t
    fill = torch.full((t.size(0), extra), value, dtype=t.dtype, device=t.device)
    return torch.cat([fill, t] if side == "left" else [t, fill], dim=1)


def trim_padding(batch: dict[str, Any]) -> dict[str, Any]:
    """One micro-batch cut to its own widths: prompt columns no row uses (left), completion columns no row scores
    (right).

    TRL pads every row of a generation batch to the batch-wide widest prompt and completion, and its split into
    micro-batches slices rows only, so each micro-batch computed the step's widest shape (a 0.5k-token answer row
    beside 4.7k-token memory rows). A column that is padding in every row changes nothing: trailing completion
    columns come after every scored token (causal attention), and leading prompt columns are masked keys; dropping
    them only shifts absolute positions, which rotary attention does not see (equal up to rounding).
    """
    prompt_cols = batch["prompt_mask"].any(0).nonzero()
    completion_cols = (batch["completion_mask"] != 0).any(0).nonzero()
    start = int(prompt_cols[0]) if prompt_cols.numel() else batch["prompt_mask"].size(1) - 1
    end = int(completion_cols[-1]) + 1 if completion_cols.numel() else 1
    prompt_width, completion_width = batch["prompt_mask"].size(1), batch["completion_mask"].size(1)
    out = dict(batch)
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or value.dim() != 2:
            continue
        if key.startswith("prompt") and value.size(1) == prompt_width:
            out[key] = value[:, start:]
        elif value.size(1) == completion_width and (
            key.startswith("completion") or key.endswith("per_token_logps") or key in ("tool_mask", "importance_sampling_ratio")
        ):
            out[key] = value[:, :end]
    return out


def _select_rows(out: dict[str, Any], keep: torch.Tensor) -> None:
    """Keep the rows where ``keep`` is true in every per-row tensor of ``out`` (at least one row survives)."""
    n = keep.numel()
    if not keep.any():
        keep = keep.clone()
        keep[0] = True  # _pad_row_count copies row 0; it is a zero-advantage row, so it adds no gradient either
    for key, value in list(out.items()):
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.size(0) == n:
            out[key] = value[keep]


class MemGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` for agents whose trajectories are several training rows (see the module docstring).

    What it takes from TRL, guarded by ``tests/test_trl_surface.py``:

    - the constructor argument ``rollout_func`` (= :meth:`_rollout`, the agent's rollout);
    - overrides, each calling ``super()``: ``_generate_and_score_completions`` (stash the batch, then
      :meth:`_expand_rows`), ``_calculate_rewards`` (time it, keep each trajectory's rewards), ``_get_train_sampler``
      (an epoch-seeded sampler for exact resume), ``_get_output_dir`` and ``_save_checkpoint`` (write checkpoints
      to a staging folder, rename when complete), ``log`` (derive ``time/update_s``), ``_prepare_inputs`` (trim
      each micro-batch to its own widths: :func:`trim_padding`);
    - private methods it calls: ``_generate_single_turn(prompt_ids, images, multimodal_fields, num_generations)``
      (every agent turn, through :class:`TrainerGenerator`) and ``_get_per_token_logps_and_entropies`` (old and
      reference log-probs of the memory rows);
    - private attributes it reads: ``_tokenizer``, ``_metrics`` (its own metrics go into TRL's), ``_step``
      (generation boundaries for checkpoints); public ones: ``generation_config``, ``vllm_generation``,
      ``reward_func_names``, ``reward_weights``, ``beta``, ``loss_type``, ``top_entropy_quantile``, ``ref_model``;
    - two process-wide patches of ``trl.trainer.utils`` (``_use_triton``, ``_CHUNKED_LOGPROB_CHUNK_SIZE``), with
      their reasons in ``trainer/trl_patches.py``.
    """

    def __init__(self, *args: Any, agent: Any, rollout_sink: Any, **kwargs: Any):
        self.agent = agent
        self.rollout_sink = rollout_sink
        self._batch_inputs: list[dict[str, Any]] = []
        self._trajectories: list[Trajectory] = []
        self._phase_seconds = dict.fromkeys(PHASES, 0.0)
        self._staging: Path | None = None  # set while a checkpoint is being written
        score_only_completion_positions()
        with cpu_engine_settings(kwargs.get("args"), kwargs.get("model")):
            super().__init__(*args, rollout_func=self._rollout, **kwargs)
        adopt_cpu_weight_sync(self)
        lean_cpu_logprob_tiles(self.accelerator.device)

    # -- generation -------------------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._batch_inputs = inputs
        out = super()._generate_and_score_completions(inputs)
        return self._expand_rows(out)

    def _rollout(self, prompts: list[Any], trainer: GRPOTrainer) -> dict[str, Any]:
        start = time.perf_counter()
        episodes = self.agent.episodes(self._batch_inputs)
        generator = TrainerGenerator(self)
        self._trajectories = self.agent.rollout(episodes, generator)
        generator.finish()
        self._phase_seconds["generate"] += time.perf_counter() - start
        final = [t.turns[-1] for t in self._trajectories]
        extras = {key: [t.extras.get(key) for t in self._trajectories] for t in self._trajectories for key in t.extras}
        return {
            "prompt_ids": [turn.prompt_ids for turn in final],
            "completion_ids": [turn.completion_ids for turn in final],
            "logprobs": None,
            "memory_within_budget": [t.memory_within_budget for t in self._trajectories],
            **extras,
        }

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        start = time.perf_counter()
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._phase_seconds["reward"] += time.perf_counter() - start
        local = rewards[self.accelerator.process_index * len(prompts) :][: len(prompts)]
        weights = self.reward_weights.to(local.device)
        for traj, row in zip(self._trajectories, local.cpu()):
            traj.rewards = {n: (None if torch.isnan(v) else float(v)) for n, v in zip(self.reward_func_names, row)}
            traj.reward = None if torch.isnan(row).all() else float((row * weights.cpu()).nansum())
        return rewards

    def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
        """TRL's micro-batch, trimmed to its own widths (:func:`trim_padding`)."""
        return trim_padding(super()._prepare_inputs(generation_batch))

    # -- rows -------------------------------------------------------------------------------------------------
    def _memory_logps(self, which: str, ids: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
        batch = self.args.per_device_train_batch_size
        with torch.no_grad():
            if which == "old" or self.ref_model is not None:
                model = self.model if which == "old" else self.ref_model
                return self._get_per_token_logps_and_entropies(model, ids, mask, keep, batch_size=batch)[0]
            unwrapped = self.accelerator.unwrap_model(self.model)
            with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                return self._get_per_token_logps_and_entropies(self.model, ids, mask, keep, batch_size=batch)[0]

    def _memory_row_logps(
        self, out: dict[str, Any], prompts: list[list[int]], completions: list[list[int]], device: torch.device
    ) -> dict[str, torch.Tensor]:
        """Old/reference log-probs of this rank's memory rows, for the keys TRL computed for the final rows.

        Under ZeRO-3 / FSDP every forward is a collective (it gathers each layer's parameters), and ranks hold
        different numbers of memory rows (one per chunk of their documents). So every rank first agrees on the
        largest count and pads its rows with copies of one row (a rank without memory rows uses its first final
        turn) up to it: all ranks run the same number of forwards, and the copies' results are dropped.
        """
        keys = (("old_per_token_logps", "old"), ("ref_per_token_logps", "ref"))
        wanted = [(key, which) for key, which in keys if out.get(key) is not None]
        if not wanted:
            return {}
        n = len(prompts)
        count = int(self.accelerator.gather(torch.tensor([n], device=device)).max())
        if count == 0:
            return {}
        if n:
            filler = (prompts[0], completions[0])
        else:
            turn = self._trajectories[0].turns[-1]
            filler = (turn.prompt_ids, turn.completion_ids)
        prompts = prompts + [filler[0]] * (count - n)
        completions = completions + [filler[1]] * (count - n)
        pad_id = self._tokenizer.pad_token_id
        completion = _pad(completions, pad_id, "right")
        ids = torch.cat([_pad(prompts, pad_id, "left"), completion], dim=1).to(device)
        mask = torch.cat(
            [_pad([[1] * len(p) for p in prompts], 0, "left"), _pad([[1] * len(c) for c in completions], 0, "right")], dim=1
        ).to(device)
        return {key: self._memory_logps(which, ids, mask, completion.size(1))[:n] for key, which in wanted}

    def _expand_rows(self, out: dict[str, Any]) -> dict[str, Any]:
        if "importance_sampling_ratio" in out or "sampling_per_token_logps" in out:  # trainer/config.py turns it off
            raise NotImplementedError("vLLM importance-sampling correction is not supported for memory rows")
        device = out["prompt_ids"].device
        pad_id = self._tokenizer.pad_token_id
        slots, prompts, completions = [], [], []
        for slot, traj in enumerate(self._trajectories):
            for turn in traj.turns[:-1]:
                if turn.trainable:
                    slots.append(slot)
                    prompts.append(turn.prompt_ids)
                    completions.append(turn.completion_ids)
        n_final = out["prompt_ids"].size(0)
        logps = self._memory_row_logps(out, prompts, completions, device)
        if slots:
            mem_prompt = _pad(prompts, pad_id, "left").to(device)
            mem_prompt_mask = _pad([[1] * len(p) for p in prompts], 0, "left").to(device)
            mem_completion = _pad(completions, pad_id, "right").to(device)
            mem_completion_mask = _pad([[1] * len(c) for c in completions], 0, "right").to(device)
            p_width = max(mem_prompt.size(1), out["prompt_ids"].size(1))
            c_width = max(mem_completion.size(1), out["completion_ids"].size(1))
            index = torch.tensor(slots, device=device)
            for key, new, value, side in (
                ("prompt_ids", mem_prompt, pad_id, "left"),
                ("prompt_mask", mem_prompt_mask, 0, "left"),
                ("completion_ids", mem_completion, pad_id, "right"),
                ("completion_mask", mem_completion_mask, 0, "right"),
                *((k, v, 0.0, "right") for k, v in logps.items()),
            ):
                width = p_width if key.startswith("prompt") else c_width
                out[key] = torch.cat([_widen(out[key], width, value, side), _widen(new, width, value, side)])
            out["advantages"] = torch.cat([out["advantages"], out["advantages"][index]])
        loss_mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
        out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        if self.skips_zero_advantage_rows:
            _select_rows(out, out["advantages"] != 0)
        trained = out["prompt_ids"].size(0)
        self._pad_row_count(out)
        self._log_rollout_metrics(n_final, n_final + len(slots), trained)
        return out

    @property
    def skips_zero_advantage_rows(self) -> bool:
        """Whether rows with advantage 0 can skip the forward and backward passes without changing the step at all.

        They can when such a row's loss is exactly 0 (no KL term, a loss linear in the advantage, no entropy quantile
        taken across the micro-batch) and the loss is normalised by the step's token count ``num_items_in_batch``,
        which :meth:`_expand_rows` counts over all rows before any is dropped. On a small model most groups soon
        agree (all right or all wrong), so this removes most of the update phase.
        """
        return (
            self.args.skip_zero_advantage_rows  # MemGRPOConfig
            and self.beta == 0.0
            and self.loss_type in ("dapo", "cispo")
            and self.top_entropy_quantile == 1.0
        )

    def _pad_row_count(self, out: dict[str, Any]) -> None:
        """Pad rows with loss-masked copies of row 0 up to the largest count on any rank, rounded up to S.

        TRL's ``split_tensor_dict`` silently drops a remainder, and its clip statistics gather equal-sized tensors.
        """
        n = out["prompt_ids"].size(0)
        s = self.args.steps_per_generation
        most = int(self.accelerator.gather(torch.tensor([n], device=out["prompt_ids"].device)).max())
        target = -(-most // s) * s
        extra = target - n
        if extra <= 0:
            return
        for key, value in list(out.items()):
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.size(0) == n:
                copies = value[:1].repeat(extra, *([1] * (value.dim() - 1)))
                if key in ("completion_mask", "advantages", "tool_mask"):
                    copies = torch.zeros_like(copies)
                out[key] = torch.cat([value, copies])

    def _log_rollout_metrics(self, n_slots: int, n_rows: int, n_trained: int) -> None:
        device = self.accelerator.device
        trajs = self._trajectories
        local = torch.tensor(
            [n_rows, n_trained, n_slots, sum(len(t.turns) for t in trajs), sum(t.memory_within_budget for t in trajs)],
            dtype=torch.float64,
            device=device,
        )
        rows, trained, slots, turns, within = self.accelerator.gather(local).view(-1, 5).sum(0).tolist()
        metrics = self._metrics["train" if self.model.training else "eval"]
        metrics["rows"].append(rows)
        metrics["rows/trained"].append(trained)
        metrics["trajectories"].append(slots)
        metrics["turns/mean"].append(turns / max(slots, 1))
        metrics["memory/within_budget"].append(within / max(slots, 1))
        # agent-specific means (e.g. operation rates), averaged over processes
        agent_metrics = sorted(self.agent.rollout_metrics(trajs).items()) if trajs else []
        if agent_metrics:
            names, values = zip(*agent_metrics)
            gathered = self.accelerator.gather(torch.tensor(values, dtype=torch.float64, device=device))
            for name, value in zip(names, gathered.view(-1, len(names)).mean(0).tolist()):
                metrics[name].append(value)
        for name, value in self._retention_metrics(trajs).items():
            metrics[name].append(value)
        for phase in PHASES:
            metrics[f"time/{phase}_s"].append(self._phase_seconds[phase])
            self._phase_seconds[phase] = 0.0
        if self.accelerator.is_main_process:
            self.rollout_sink.write(self.state.global_step + 1, trajs)

    def _retention_metrics(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """This step's answer retention (``report.retention``) pooled over processes; {} for agents without it."""
        from accelerate.utils import gather_object

        parts = gather_object([retention.counts([t.to_record() for t in trajectories])])
        return retention.as_metrics(retention.summarise(retention.merge(parts)))

    # -- checkpoints ------------------------------------------------------------------------------------------
    def at_generation_boundary(self) -> bool:
        """True when the next micro-batch generates afresh: a checkpoint here resumes exactly (see checkpoints.py)."""
        return self._step % (self.args.steps_per_generation * self.num_iterations) == 0

    def _get_train_sampler(self, dataset: Any = None) -> Any:
        return EpochSeededSampler(super()._get_train_sampler(dataset))

    def _get_output_dir(self, trial: Any) -> str:
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """transformers' save into a hidden staging folder, renamed to ``checkpoint-N`` only once complete."""
        run_dir = Path(super()._get_output_dir(trial))
        name = f"checkpoint-{self.state.global_step}"
        staging = self._staging = staging_dir(run_dir, self.state.global_step)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            replace_dir(staging / name, run_dir / name)
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(str(run_dir), self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        metrics = self._metrics["train"]
        if metrics.get("step_time") and metrics.get("time/generate_s"):
            step = sum(metrics["step_time"]) / len(metrics["step_time"])
            spent = sum(sum(metrics[f"time/{p}_s"]) / len(metrics[f"time/{p}_s"]) for p in PHASES)
            metrics["time/update_s"] = [max(step - spent, 0.0)]
        super().log(logs, start_time)
