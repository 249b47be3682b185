"""``memfactory check``: every problem a recipe would hit, found in one pass, before any weights load.

It runs by itself and at the start of ``train`` (mode ``train``) and ``eval`` (mode ``eval``). It resolves every
registry name and file (the model's config and tokenizer, agent and modules, environment, data rows, rewards),
checks each turn's token budget against the model's context (the agent's ``check_budget``), the
batch and group arithmetic and the checkpoint settings, asks an HTTP judge one probe question, and estimates
training rows per step (the agent's ``expected_rows``). Each check that fails adds a problem and the
others still run, so a recipe with three mistakes is reported once with three problems.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from memfactory_cli.agents.base import BaseAgent
from memfactory_cli.config import RecipeConfig, load_recipe, to_yaml
from memfactory_cli.config.loader import recipe_data, unknown_keys
from memfactory_cli.errors import UserError
from memfactory_cli.registry import registry
from memfactory_cli.workflows import launch

MODES = ("train", "eval", "all")
ESTIMATE_ROWS = 64  # training rows tokenised for the question-length and rows-per-step estimates


@dataclass
class CheckReport:
    """Problems (each one line) and what was resolved, in the order the checks ran."""

    problems: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    cfg: RecipeConfig | None = None
    checkpoint: Path | None = None  # train: where training resumes from
    plan: Any = None  # train on a GPU (or --gpu-memory): the memory plan (workflows/planner.py)
    model_path: str | None = None
    question_tokens: int = 0
    rows_per_trajectory: float = 1.0

    def attempt(self, check: Callable[..., Any], *args: Any, where: str = "") -> Any:
        """Run one check; a ``UserError`` becomes a problem (prefixed with ``where``) and None is returned."""
        try:
            return check(*args)
        except UserError as exc:
            message = str(exc)
            self.problems.append(f"{where}: {message}" if where and not message.startswith(where) else message)
            return None

    def raise_if_problems(self) -> None:
        if len(self.problems) == 1:
            raise UserError(self.problems[0])
        if self.problems:
            listed = "; ".join(f"({i}) {p}" for i, p in enumerate(self.problems, 1))
            raise UserError(f"{len(self.problems)} problems: {listed}")

    def summary(self) -> str:
        return "check ok: " + " · ".join(f"{k} {v}" for k, v in self.facts.items())


# -- pieces ------------------------------------------------------------------------------------------------------
def model_context(path: str, tokenizer: Any) -> int | None:
    """The model's context length from its config (no weights), capped by the tokenizer's when that is set."""
    from transformers import AutoConfig

    from memfactory_cli.models.loading import config_path

    try:
        config = AutoConfig.from_pretrained(config_path(path))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the model config at {path}: {(str(exc).splitlines() or ['?'])[0]}") from None
    lengths = [getattr(c, "max_position_embeddings", None) for c in (config, getattr(config, "text_config", None))]
    lengths.append(getattr(tokenizer, "model_max_length", None))
    known = [n for n in lengths if isinstance(n, int) and 0 < n < 10**7]
    return min(known) if known else None


def writable_problem(path: Path, key: str) -> str | None:
    """Why ``path`` could not be created and written, found without creating anything."""
    p = path.expanduser().absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        return f"{key} {path} is not writable: {p} is a file"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{key} {path} is not writable ({p})"
    return None


def judge_problem(options: dict[str, Any], where: str) -> str | None:
    """Ask an HTTP judge one question it cannot get wrong; no verdict (down, timeout, garbage) is a problem.

    Local (``hf``) judges are not probed: that would load a model. Retries are capped at one for the probe.
    """
    from memfactory_cli.rewards.judge.core import Judge, config_from

    try:
        config = config_from({k: v for k, v in options.items() if k != "require_boxed"})
        if config.backend != "openai":
            return None
        judge = Judge(replace(config, cache=False, max_retries=min(config.max_retries, 1)))
        report = judge.judge(["What is the capital of France?"], [["Paris"]], ["Paris"])
    except UserError as exc:
        return f"{where}: {exc}"
    except TypeError as exc:
        return f"{where}: {exc}"
    if report.verdicts[0] is None:
        reasons = ", ".join(sorted(report.failures)) or "no verdict"
        return f"{where}: the judge at {config.base_url} gave no verdict on a probe question ({reasons})"
    return None


def _reward_problems(report: CheckReport, cfg: RecipeConfig) -> None:
    from memfactory_cli.rewards import build_reward_funcs

    if not cfg.rewards:
        report.problems.append("rewards: at least one reward is required")
    for i, spec in enumerate(cfg.rewards):
        where = f"rewards[{i}]"
        try:
            build_reward_funcs([spec])
        except UserError as exc:
            message = str(exc).replace("rewards[0]", where, 1)
            report.problems.append(message if message.startswith(where) else f"{where}: {message}")
            continue
        if spec.name == "llm_judge" and (problem := judge_problem(dict(spec.args), f"{where} (llm_judge)")):
            report.problems.append(problem)
        if spec.name == "llm_judge" and spec.args.get("require_boxed", True) and _answers_parsed(cfg):
            report.problems.append(
                f"{where} (llm_judge): env '{cfg.env.name}' answers without \\boxed{{}}, so a judge that requires it "
                f"would score every completion 0 without asking; set {where}.args.require_boxed=false"
            )
    names = [spec.name.rsplit(":", 1)[-1] for spec in cfg.rewards]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        report.problems.append(f"rewards: '{twice[0]}' is listed twice")


def _answers_parsed(cfg: RecipeConfig) -> bool:
    """Whether the recipe's env answers in plain text (Memory-R1's ``**Answer:**``), never in ``\\boxed{}``."""
    try:
        return bool(registry("env").get(cfg.env.name).answers_parsed)
    except UserError:
        return False  # an unknown env is reported by its own check


def _trainer_problems(report: CheckReport, cfg: RecipeConfig) -> None:
    from memfactory_cli.trainer.config import batch_layout

    t = cfg.trainer
    world = report.attempt(launch.world_size, cfg)  # the processes `train` will run, before it launches them
    layout = report.attempt(batch_layout, cfg, world) if world is not None else None
    if layout is not None:
        report.facts["batch"] = (
            f"{t.questions_per_step} questions x {t.num_generations} = {layout['slots']} trajectories "
            f"over {world} process(es) ({layout['per_device_train_batch_size']} per micro-batch)"
        )
    for name in ("learning_rate", "logging_steps", "num_iterations"):
        if getattr(t, name) <= 0:
            report.problems.append(f"trainer.{name} must be positive, got {getattr(t, name)}")
    for name in ("save_steps", "warmup_steps"):
        if getattr(t, name) < 0:
            report.problems.append(f"trainer.{name} must be >= 0, got {getattr(t, name)}")
    shared = t.num_iterations * max(1, t.steps_per_generation // max(t.gradient_accumulation_steps, 1))
    if t.save_steps > 0 and t.num_iterations > 0 and t.save_steps % shared:
        report.problems.append(
            f"trainer.save_steps={t.save_steps} must be a multiple of trainer.num_iterations x (steps_per_generation / "
            f"gradient_accumulation_steps) = {shared}: steps that share one generation cannot be resumed exactly in between"
        )
    if cfg.output.keep_last < 0:
        report.problems.append(f"output.keep_last must be >= 0 (0 keeps all), got {cfg.output.keep_last}")


def _model_problems(report: CheckReport, cfg: RecipeConfig, name: str, rows: list[dict[str, Any]]) -> Any:
    """Resolve one model (config and tokenizer only), build the agent for it and check its turn budgets."""
    from memfactory_cli.models.loading import load_tokenizer, resolve_model_path
    from memfactory_cli.workflows.common import build_agent

    path = report.attempt(resolve_model_path, name, where="model.name_or_path")
    if path is None:
        return None
    try:
        tokenizer = load_tokenizer(path)
    except (OSError, ValueError) as exc:
        report.problems.append(f"model '{name}': cannot load its tokenizer: {(str(exc).splitlines() or ['?'])[0]}")
        return None
    context = report.attempt(model_context, path, tokenizer, where=f"model '{name}'")
    agent = report.attempt(build_agent, cfg, tokenizer)
    if agent is None:
        return None
    described = f"{name} (context {context or 'unknown'})"
    report.facts["model"] = f"{report.facts['model']}, {described}" if "model" in report.facts else described
    questions = [len(q) for q in tokenizer([r["question"] for r in rows], add_special_tokens=False)["input_ids"]] if rows else [0]
    report.model_path, report.question_tokens = path, max(questions)
    if context is not None:
        report.problems += agent.check_budget(context, question_tokens=max(questions))
    return agent


def _rows_estimate(report: CheckReport, cfg: RecipeConfig, agent: BaseAgent, rows: list[dict[str, Any]]) -> None:
    sample = rows[:ESTIMATE_ROWS]
    counts = [agent.expected_rows(e) for e in agent.episodes(sample)]
    known = bool(counts) and None not in counts
    if not known:
        per_trajectory, how = 1.0, "at least"
    else:
        per_trajectory, how = sum(counts) / len(counts), "about"
    t = cfg.trainer
    report.rows_per_trajectory = per_trajectory
    total = t.questions_per_step * t.num_generations * per_trajectory
    report.facts["rows per step"] = (
        f"{how} {total:.0f} ({t.questions_per_step} x {t.num_generations} trajectories x {per_trajectory:.1f} rows"
        f"{f', from {len(sample)} training rows' if known else ''})"
    )


def _memory_plan(report: CheckReport, cfg: RecipeConfig, agent: Any, gpu_memory: int | None) -> None:
    """The planner's phases against the GPU; a phase that cannot fit is a problem naming what to change."""
    from transformers import AutoConfig

    from memfactory_cli.trainer.config import resolve_bf16
    from memfactory_cli.workflows import planner

    gpu = gpu_memory if gpu_memory is not None else planner.detected_gpu_memory()
    if gpu is None:
        return
    bf16 = cfg.trainer.bf16 in ("true", "True", True) or (cfg.trainer.bf16 == "auto" and (gpu_memory is not None or resolve_bf16("auto", "cuda")))
    world = max(int(os.environ.get("WORLD_SIZE", "1")), cfg.launch.num_processes)  # the parent plans for its children
    run = planner.run_shape(cfg, agent, report.rows_per_trajectory, report.question_tokens, world)
    trains_llm = registry("agent").get(cfg.agent.name).learner_for(cfg.agent) == "grpo"  # reinforce: LLM frozen
    import torch

    from memfactory_cli.models.loading import config_path, flash_attn_usable

    elsewhere = gpu_memory is not None and not torch.cuda.is_available()  # planning for a GPU on another host
    report.plan = planner.plan(
        cfg, AutoConfig.from_pretrained(config_path(report.model_path)), gpu, run, bf16, trains_llm,
        attention=cfg.model.attn_implementation, assume_flash=elsewhere or flash_attn_usable(),
    )
    if any(name in cfg.launch.config_file for name in ("zero", "fsdp")):
        # the plan is per process and does not model sharding: its states are upper bounds, so it only informs
        report.plan.notes.append(f"launch.config_file={cfg.launch.config_file}: sharding is not modelled (upper bounds)")
    elif problem := report.plan.problem():
        report.problems.append(problem)


# -- the check ---------------------------------------------------------------------------------------------------
def run_checks(
    cfg: RecipeConfig,
    mode: str = "train",
    resume: str | None = None,
    models: list[str] | None = None,
    strict: bool = True,
    gpu_memory: int | None = None,
) -> CheckReport:
    """Every check for ``mode`` (train | eval | all); raises one ``UserError`` listing all problems when ``strict``.

    ``gpu_memory``: plan for a GPU of that many bytes (the recipe is checked as if on CUDA); otherwise a run that
    resolves to CUDA is planned against the detected GPU.
    """
    from memfactory_cli.models.loading import resolve_device
    from memfactory_cli.trainer.config import resolve_bf16
    from memfactory_cli.workflows.resume import resume_problems

    if mode not in MODES:
        raise ValueError(mode)
    report = CheckReport(cfg=cfg)
    training = mode in ("train", "all")
    # the allowed values are the schema's; this checks the machine (--gpu-memory: a GPU elsewhere)
    device = "cuda" if gpu_memory is not None and cfg.trainer.device != "cpu" else report.attempt(resolve_device, cfg.trainer.device)
    if device is not None and cfg.model.attn_implementation.startswith("flash_attention"):  # needs half precision
        from memfactory_cli.models.loading import choose_attention

        bf16 = report.attempt(resolve_bf16, cfg.trainer.bf16, device)
        report.attempt(choose_attention, cfg.model.attn_implementation, device, cfg.model.dtype, bool(bf16))
    rows: list[dict[str, Any]] = []
    if training:
        _trainer_problems(report, cfg)
        if device is not None and (problem := report.attempt(launch.sharding_problem, cfg, device)):
            report.problems.append(problem)
        env = report.attempt(lambda: registry("env").get(cfg.env.name)(cfg.data))
        if env is not None:
            rows = report.attempt(env.rows, "train") or []
            if cfg.trainer.eval_before_after:
                report.attempt(env.rows, "eval")
        _reward_problems(report, cfg)
        if cfg.logging.swanlab == "cloud" and not os.environ.get("SWANLAB_API_KEY"):
            report.problems.append("logging.swanlab=cloud needs the SWANLAB_API_KEY environment variable; use offline")
        if problem := writable_problem(Path(cfg.output.dir), "output.dir"):
            report.problems.append(problem)
        problems, report.checkpoint = resume_problems(cfg, resume)
        report.problems += problems
        if report.checkpoint is not None:
            report.facts["resume"] = str(report.checkpoint)
    if mode in ("eval", "all") and cfg.eval.judge:
        if problem := judge_problem(dict(cfg.eval.judge), "eval.judge"):
            report.problems.append(problem)
    agent = None
    for name in models or [cfg.model.name_or_path]:
        agent = _model_problems(report, cfg, name, rows) or agent
    if training and agent is not None and not report.problems:
        _rows_estimate(report, cfg, agent, rows)
    if training and agent is not None and device == "cuda" and report.model_path is not None:
        report.attempt(_memory_plan, report, cfg, agent, gpu_memory)
    if strict:
        report.raise_if_problems()
    return report


def load_problems(recipe: str | None, overrides: list[str]) -> tuple[RecipeConfig | None, list[str]]:
    """The typed recipe, or every unknown key at once (type errors come one at a time, from OmegaConf)."""
    try:
        unknown = unknown_keys(recipe_data(recipe, overrides), RecipeConfig)
        if unknown:
            prefix = f"{recipe}: " if recipe else ""
            return None, [prefix + u for u in unknown]
        return load_recipe(recipe, overrides), []
    except UserError as exc:
        return None, [str(exc)]


def run(
    recipe: str, overrides: list[str], resume: str | None = None, mode: str = "all", gpu_memory: str | None = None
) -> CheckReport:
    """``memfactory check``: print the resolved recipe, what was resolved and the memory plan, then every problem."""
    from memfactory_cli.models.footprint import parse_bytes

    gpu = parse_bytes(gpu_memory, "--gpu-memory") if gpu_memory is not None else None
    cfg, problems = load_problems(recipe, overrides)
    report = CheckReport(problems=problems, cfg=cfg)
    if cfg is not None:
        report = run_checks(cfg, mode, resume=resume, strict=False, gpu_memory=gpu)
        print(to_yaml(cfg).rstrip())
        print("---")
        for key, value in report.facts.items():
            print(f"{key}: {value}")
        if report.plan is not None:
            print(report.plan.render())
    if report.problems:
        raise UserError("\n".join(report.problems))  # the CLI prints one line per problem
    print("check ok: no problems found")
    return report
