"""The judge: cache lookup, one backend call per distinct (question, references, prediction) (or per question in
groupwise mode), strict parsing.

Scores are 1.0 / 0.0 for a verdict, ``None`` when no verdict could be had (all retries failed, or the reply was not
exactly one label). ``None`` is never turned into 0: TRL leaves it out of the reward mean, and the count shows up
as ``judge/errors`` and ``judge/error_rate``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memfactory_cli.errors import UserError, did_you_mean
from memfactory_cli.modules.text import after_thinking
from memfactory_cli.rewards.base import completion_text
from memfactory_cli.rewards.judge.backends import Backend, HFBackend, OpenAIBackend
from memfactory_cli.rewards.judge.cache import VerdictCache, cache_key
from memfactory_cli.rewards.judge.templates import MATCH_MODES, get_template
from memfactory_cli.rewards.qa import extract_answer

BACKENDS = ("openai", "hf")


@dataclass(frozen=True)
class JudgeConfig:
    """Every option of the judge; hashable, so one configuration maps to one live judge per process."""

    backend: str = "openai"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    template: str = "binary"
    match: str = "any"
    concurrency: int = 16
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 0.5
    temperature: float = 0.0
    max_tokens: int | None = None
    cache: bool = True
    cache_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 16
    enable_thinking: bool = False


@dataclass
class JudgeReport:
    """One batch: per-item verdicts plus what it took to get them."""

    verdicts: list[bool | None]
    asked: int = 0
    errors: int = 0
    cache_hits: int = 0
    calls: int = 0
    requests: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def error_rate(self) -> float:
        return self.errors / self.asked if self.asked else 0.0


class Judge:
    def __init__(self, config: JudgeConfig, backend: Backend | None = None, cache: VerdictCache | None = None):
        if config.match not in MATCH_MODES:
            raise UserError(f"llm_judge: match must be one of {', '.join(MATCH_MODES)}, not '{config.match}'")
        self.config = config
        self.template = get_template(config.template)
        self.template_key = self.template.key(config.match)
        self.backend = backend or _make_backend(config)
        if cache is None and config.cache:
            cache = VerdictCache(_cache_path(config))
        self.cache = cache
        self.totals: Counter[str] = Counter()

    def describe(self) -> dict[str, Any]:
        """What a summary or run config should record about the judge."""
        c = self.config
        return {"backend": c.backend, "model": c.model, "template": self.template_key, "base_url": c.base_url}

    def judge(
        self, questions: list[str], references: list[list[str]], predictions: list[str], tasks: list[str | None] | None = None
    ) -> JudgeReport:
        """A verdict for each prediction against all of its references; ``tasks`` picks a per-task prompt (the
        ``longmemeval`` template's question types) and is part of the cache key."""
        tasks = list(tasks) if tasks is not None else [None] * len(questions)
        keys = [
            cache_key(self.backend.identity, self.template_key, q if t is None else f"[{t}] {q}", refs, p)
            for q, refs, p, t in zip(questions, references, predictions, tasks)
        ]
        known: dict[str, bool | None] = dict(self.cache.get_many(sorted(set(keys)))) if self.cache is not None else {}
        report = JudgeReport([None] * len(keys), asked=len(keys))
        report.cache_hits = sum(k in known for k in keys)
        todo = {k: (q, tuple(r), p, t) for k, q, r, p, t in zip(keys, questions, references, predictions, tasks) if k not in known}
        groups: dict[Any, list[str]] = {}
        for key, (question, refs, _, task) in todo.items():
            groups.setdefault((question, refs, task) if self.template.groupwise else key, []).append(key)
        if groups:
            conversations = [self._conversation([todo[k] for k in group]) for group in groups.values()]
            budget = self.config.max_tokens or self.template.budget(max(len(g) for g in groups.values()))
            fresh = []
            for group, reply in zip(groups.values(), self.backend.complete(conversations, budget)):
                report.calls += 1
                report.requests += reply.attempts
                if reply.text is None:
                    report.failures[reply.error or "no reply"] += len(group)
                    verdicts: list[bool | None] = [None] * len(group)
                else:
                    verdicts = self.template.parse(reply.text, len(group))
                    if None in verdicts:
                        report.failures["unparsed reply"] += verdicts.count(None)
                for key, verdict in zip(group, verdicts):
                    known[key] = verdict
                    if verdict is not None:
                        fresh.append((key, verdict, reply.text or ""))
            if self.cache is not None:
                self.cache.put_many(fresh)
        report.verdicts = [known[k] for k in keys]
        report.errors = sum(v is None for v in report.verdicts)
        self.totals.update(
            asked=report.asked, errors=report.errors, cache_hits=report.cache_hits, calls=report.calls,
            requests=report.requests,
        )
        return report

    def _conversation(self, items: list[tuple[str, tuple[str, ...], str, str | None]]) -> list[dict[str, str]]:
        """One prompt for predictions that share a question, references and task (exactly one unless groupwise)."""
        question, refs, _, task = items[0]
        return self.template.messages(question, list(refs), [p for _, _, p, _ in items], self.config.match, task)

    def score_completions(
        self,
        questions: list[str],
        references: list[list[str]],
        completions: list[Any],
        require_boxed: bool = True,
        tasks: list[str | None] | None = None,
    ) -> tuple[list[float | None], JudgeReport]:
        """Scores for model replies: no boxed answer is a wrong answer (0.0, no call), no (non-blank) reference is
        ``None``.

        With ``require_boxed=False`` an unboxed reply is judged whole (after any thinking), as RULER scoring does.
        The prediction goes to the judge on one line, so a policy cannot forge new sections of the judge prompt.
        """
        scores: list[float | None] = [None] * len(completions)
        ask: list[int] = []
        predictions: list[str] = []
        for i, completion in enumerate(completions):
            if not any(str(r).strip() for r in references[i]):
                continue
            prediction = extract_answer(completion)
            if prediction is None and not require_boxed:
                prediction = after_thinking(completion_text(completion))
            prediction = " ".join((prediction or "").split())
            if not prediction:
                scores[i] = 0.0
                continue
            ask.append(i)
            predictions.append(prediction)
        report = self.judge(
            [questions[i] for i in ask], [list(references[i]) for i in ask], predictions, None if tasks is None else [tasks[i] for i in ask]
        )
        for i, verdict in zip(ask, report.verdicts):
            scores[i] = None if verdict is None else float(verdict)
        return scores, report


def _make_backend(c: JudgeConfig) -> Backend:
    if c.backend == "openai":
        return OpenAIBackend(
            c.base_url, c.model, c.api_key_env, c.concurrency, c.timeout_s, c.max_retries, c.backoff_s,
            temperature=c.temperature,
        )
    if c.backend == "hf":
        return HFBackend(c.model, c.device, c.dtype, c.batch_size, c.enable_thinking)
    raise UserError(f"llm_judge: unknown backend '{c.backend}'{did_you_mean(c.backend, BACKENDS)}; known: {', '.join(BACKENDS)}")


def _cache_path(c: JudgeConfig) -> Path:
    from memfactory_cli.models.cache import cache_root

    return Path(c.cache_dir).expanduser() / "verdicts.sqlite" if c.cache_dir else cache_root() / "judge" / "verdicts.sqlite"


_judges: dict[JudgeConfig, Judge] = {}
_judges_lock = threading.Lock()


def get_judge(config: JudgeConfig) -> Judge:
    """The process's judge for this configuration: a local model is loaded once, the cache opened once."""
    with _judges_lock:
        if config not in _judges:
            _judges[config] = Judge(config)
        return _judges[config]


def config_from(options: dict[str, Any]) -> JudgeConfig:
    known = set(asdict(JudgeConfig()))
    unknown = [k for k in options if k not in known]
    if unknown:
        raise UserError(f"llm_judge: unknown option '{unknown[0]}'{did_you_mean(unknown[0], known)}")
    return JudgeConfig(**options)
