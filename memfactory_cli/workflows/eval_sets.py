"""``memfactory eval``: named sets x models, avg@k, a resumable results.jsonl and readable summaries.

The rollout and the statistics are ``evaluate.rollout_pairs`` / ``evaluate.summarise``, shared with the trainer's
before/after eval; this module adds what a long evaluation needs: results appended and fsynced a batch at a time,
re-runs that only roll out the missing (question, sample) pairs, and summaries rewritten atomically after each
(set, model).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memfactory_cli.config import load_recipe
from memfactory_cli.config.schema import EvalConfig, RecipeConfig
from memfactory_cli.data.sources import NeedsTokenizer, load_rows, set_source
from memfactory_cli.errors import UserError
from memfactory_cli.generation.base import SamplingParams
from memfactory_cli.io import append_jsonl, atomic_write_text, cut_torn_tail, ensure_writable_dir, read_jsonl
from memfactory_cli.report.retention import summarise_records
from memfactory_cli.workflows.common import build_env, inference_model, load_policy, make_generator
from memfactory_cli.workflows.evaluate import rollout_pairs, summarise, summarise_groups, unscored

Key = tuple[str, str, int, int]


def key(row: dict[str, Any]) -> Key:
    return (row["set"], row["model"], int(row["q"]), int(row["sample"]))


class ResultsLog:
    """results.jsonl: one row per (set, model, question, sample), appended and fsynced one batch at a time.

    A kill can only tear the last line. Opening the log cuts such a tail (a row without its newline is not done),
    and rows are only ever rolled out when their key is absent, so a re-run neither duplicates nor loses a row.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[Key, dict[str, Any]] = {}
        if path.exists():
            self._load()

    def _load(self) -> None:
        cut_torn_tail(self.path)
        try:
            rows = read_jsonl(self.path)
        except UserError as exc:
            raise UserError(f"{exc}; move the file away to start over") from None
        for lineno, row in enumerate(rows, 1):
            try:
                self.rows.setdefault(key(row), row)
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{self.path}: row {lineno} is not a results row; move the file away to start over") from None

    def __contains__(self, k: Key) -> bool:
        return k in self.rows

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        append_jsonl(self.path, rows)
        for r in rows:
            self.rows[key(r)] = r

    def select(self, set_name: str, model: str) -> list[dict[str, Any]]:
        return [r for (s, m, _, _), r in self.rows.items() if s == set_name and m == model]


def split_names(values: list[str] | None) -> list[str]:
    """``--set a,b --set c`` -> ``[a, b, c]``, order kept, duplicates dropped."""
    names = [part.strip() for v in values or [] for part in v.split(",")]
    return list(dict.fromkeys(n for n in names if n))


def sampling_for(ev: EvalConfig, k: int) -> SamplingParams:
    """Greedy only makes sense for one sample: avg@k with k > 1 always samples at the recipe's temperature/top_p."""
    if k == 1 and ev.greedy:
        return SamplingParams(do_sample=False)
    if ev.temperature <= 0 or not 0 < ev.top_p <= 1:
        raise UserError(f"eval.temperature must be > 0 and eval.top_p in (0, 1] to sample k={k}")
    return SamplingParams(do_sample=True, temperature=ev.temperature, top_p=ev.top_p)


def check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse to mix rows made under different agent or sampling settings into one results.jsonl."""
    path = out_dir / "eval_config.json"
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            before = None
        if before != settings:
            changed = sorted(k for k in settings if not isinstance(before, dict) or before.get(k) != settings[k]) or ["?"]
            raise UserError(
                f"{out_dir} holds results made with different {', '.join(changed)} settings; "
                "use another --out, or delete that folder to start over"
            )
        return
    atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _judge_identity(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """Which judge produced the ``judge`` metric (backend, model, template), for summary.json; never the key."""
    if not options:
        return None
    from memfactory_cli.rewards.judge.core import config_from

    judge = config_from({k: v for k, v in dict(options).items() if k != "require_boxed"})
    return {"backend": judge.backend, "model": judge.model, "template": judge.template}


def _judge_scores(rows: list[dict[str, Any]], options: dict[str, Any], env: Any, ruler: bool) -> list[float | None]:
    """Judge verdicts; an env whose answers are already parsed (``answers_parsed``: Memory-R1's text after
    ``**Answer:**``) is judged on that answer, never asked for a ``\\boxed{}`` it cannot have."""
    from memfactory_cli.rewards.judge import judge_texts

    args = {"match": "all" if ruler else "any", **options}
    if env.answers_parsed:
        args["require_boxed"] = False
    tasks = ["abstention" if r.get("abstention") else r.get("question_type") for r in rows]  # the longmemeval template's
    scores, _, _ = judge_texts([r["answer"] for r in rows], [r["answers"] for r in rows], [r["question"] for r in rows], tasks=tasks, **args)
    return scores


def evaluate_set(
    log: ResultsLog,
    set_name: str,
    label: str,
    rows: list[dict[str, Any]],
    agent: Any,
    env: Any,
    generator: Any,
    cfg: RecipeConfig,
    k: int,
    progress: Any = print,
) -> dict[str, Any]:
    """Roll out the (question, sample) pairs of one (set, model) that the log lacks; return its summary entry."""
    base_metrics = env.metric_names(rows)
    metrics = (*base_metrics, "judge") if cfg.eval.judge else base_metrics
    missing = [(q, s) for q in range(len(rows)) for s in range(k) if (set_name, label, q, s) not in log]
    total = len(rows) * k
    if missing:
        progress(f"{set_name} x {label}: {total - len(missing)}/{total} rows done, rolling out {len(missing)}")
    start = time.perf_counter()
    batch = max(1, cfg.eval.questions_per_rollout) * k
    for records in rollout_pairs(agent, env, rows, generator, missing, base_metrics, batch):
        if cfg.eval.judge:
            for r, score in zip(records, _judge_scores(records, dict(cfg.eval.judge), env, "string_match_all" in base_metrics)):
                r["scores"]["judge"] = score
        log.append([{"set": set_name, "model": label, **r} for r in records])
        progress(f"{set_name} x {label}: {len(log.select(set_name, label))}/{total} rows ({time.perf_counter() - start:.1f} s)")
    done = [r for r in log.select(set_name, label) if r["q"] < len(rows) and r["sample"] < k]
    _, summary = summarise(done, metrics, len(rows), k)
    group_by = env.group_by  # e.g. LoCoMo's category: every metric per group too
    groups = {"by": group_by, "groups": summarise_groups(done, rows, metrics, k, group_by)} if group_by else None
    report = getattr(agent, "eval_report", None)  # e.g. RMM online: the running recall over the test stream
    agent_report = report(done) if report is not None else None
    retention = summarise_records(done)
    return {
        "set": set_name,
        "n": len(rows),
        "k": k,
        "model": label,
        "metrics": summary,
        "context_tokens": sum(r["context_tokens"] for r in done) / max(1, len(done)),
        "source": set_source(set_name),
        "sampling": dataclasses.asdict(generator.sampling),
        "judge": _judge_identity(cfg.eval.judge),
        "unscored": unscored(done, metrics),
        **({"metric_definitions": env.metric_definitions} if hasattr(env, "metric_definitions") else {}),
        **({"by_group": groups} if groups else {}),
        **({"agent_report": agent_report} if agent_report else {}),
        **({"retention": retention} if retention else {}),
    }


def run(
    sets: list[str] | None,
    recipe: str | None,
    overrides: list[str],
    models: list[str] | None = None,
    k: int | None = None,
    limit: int | None = None,
    out: str | None = None,
    progress: Any = print,
) -> list[dict[str, Any]]:
    """Evaluate every set with every model; returns the summary entries (also in ``<out>/summary.json``)."""
    cfg = load_recipe(recipe, overrides)
    set_names = split_names(sets)
    if not set_names:
        raise UserError("--set: name at least one set (`memfactory data list` shows them), e.g. --set eval_50")
    labels = split_names(models) or [cfg.model.name_or_path]
    k = cfg.eval.k if k is None else k
    if k < 1:
        raise UserError(f"--k must be >= 1, got {k}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    sampling = sampling_for(cfg.eval, k)
    from memfactory_cli.workflows.check import run_checks

    run_checks(cfg, "eval", models=labels)
    if k > 1 and cfg.eval.greedy:
        progress(f"note: eval.greedy applies to k=1 only; sampling k={k} at temperature={sampling.temperature}, top_p={sampling.top_p}")
    shared = {}  # sets whose rows do not depend on the tokenizer load once, and fail before anything is written
    for name in set_names:
        try:
            shared[name] = load_rows(name, cfg.data, limit)
        except NeedsTokenizer:
            pass
    out_dir = ensure_writable_dir(Path(out or f"runs/eval-{Path(recipe).stem if recipe else 'default'}"))
    with exclusive(out_dir):
        return _run(cfg, set_names, labels, k, limit, sampling, out_dir, progress, shared)


@contextmanager
def exclusive(out_dir: Path) -> Iterator[None]:
    """One eval per folder at a time: two writers would interleave rows and cut each other's lines."""
    import fcntl

    with open(out_dir / ".eval.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `memfactory eval` is writing to {out_dir}; wait for it or use another --out") from None
        yield


def _run(
    cfg: RecipeConfig,
    set_names: list[str],
    labels: list[str],
    k: int,
    limit: int | None,
    sampling: SamplingParams,
    out_dir: Path,
    progress: Any,
    shared: dict[str, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    from memfactory_cli.report import write_summary

    check_settings(
        out_dir,
        {
            "agent": {
                "name": cfg.agent.name,
                "modules": cfg.agent.modules,
                # set only, so folders made before these settings existed still resume (RMM reranker weights,
                # memory_r1's bank_manager, ...)
                **{k: v for k in ("train", "reranker", "options") if (v := getattr(cfg.agent, k))},
            },
            "sampling": dataclasses.asdict(sampling),
            "data": {"seed": cfg.data.seed, "synth": cfg.data.synth},
            "judge": cfg.eval.judge,
        },
    )
    log = ResultsLog(out_dir / "results.jsonl")
    from transformers import set_seed

    env = build_env(cfg)
    entries: list[dict[str, Any]] = []
    for label in labels:
        policy = load_policy(cfg, label)
        tokenizer, agent = policy.tokenizer, policy.agent
        rows = {name: shared[name] if name in shared else load_rows(name, cfg.data, limit, tokenizer) for name in set_names}
        lm = None
        for name in set_names:
            if any((name, label, q, s) not in log for q in range(len(rows[name])) for s in range(k)) and lm is None:
                lm = inference_model(cfg, policy)
            generator = make_generator(lm, tokenizer, sampling, cfg.eval.batch_size, cfg.generation.kv_cache_budget) if lm is not None else _NoGenerator(sampling)
            set_seed(cfg.trainer.seed)
            entries.append(evaluate_set(log, name, label, rows[name], agent, env, generator, cfg, k, progress))
            write_summary(out_dir, entries)
        del lm
    write_summary(out_dir, entries)
    return entries


class _NoGenerator:
    """Stands in when every row of a (set, model) is already in the log, so a finished re-run loads no model."""

    def __init__(self, sampling: SamplingParams):
        self.sampling = sampling

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        raise AssertionError("nothing to roll out")
