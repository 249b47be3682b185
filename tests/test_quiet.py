"""Quiet runs: a tiny train step and a tiny eval cause no library deprecation warning through our own calls.

``pyproject.toml``'s filterwarnings hides DeprecationWarning/FutureWarning in the suite, so this test records
them itself (``warnings.catch_warnings``), and reads transformers' logger, which reports renamed arguments
(``past_key_values`` -> ``cache``) as log lines, not warnings. ``warning_once`` is reset first: an earlier test in
the same process must not hide a warning from this one.
"""

from __future__ import annotations

import logging
import warnings

from memfactory_cli.config import load_recipe
from tests.conftest import tiny_overrides

OURS = "memfactory_cli"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_tiny_train_and_eval_cause_no_deprecation_warning(tmp_path):
    from memfactory_cli.workflows import train
    from memfactory_cli.workflows.common import eval_generator
    from memfactory_cli.workflows.evaluate import evaluate_rows

    once = getattr(logging.Logger, "warning_once", None)
    if once is not None and hasattr(once, "cache_clear"):
        once.cache_clear()
    lines = _Lines()
    loggers = [logging.getLogger(name) for name in ("transformers", "trl")]
    for logger in loggers:
        logger.addHandler(lines)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = train.build(load_recipe(None, tiny_overrides(tmp_path / "run")))
            run.trainer.train()
            generator = eval_generator(run.trainer.model.eval(), run.tokenizer, run.cfg.eval)
            evaluate_rows(run.agent, run.env, run.eval_rows[:2] or run.env.rows("eval")[:2], generator)
    finally:
        for logger in loggers:
            logger.removeHandler(lines)
    ours = [
        f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, (DeprecationWarning, FutureWarning)) and OURS in w.filename
    ]
    logged = [line for line in lines.lines if "deprecat" in line.lower()]
    assert not ours, ours
    assert not logged, logged
