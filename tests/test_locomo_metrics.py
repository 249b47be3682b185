"""LoCoMo's own F1 (snap-research/LoCoMo task_eval/evaluation.py) and its BLEU-1 companion, against values computed
by the official functions (run on these cases with bert_score stubbed out) and by hand."""

from __future__ import annotations

import pytest

from memfactory_cli.rewards.locomo import locomo_scores, normalize
from memfactory_cli.rewards.memory_r1 import answer_scores


@pytest.mark.parametrize(
    "prediction,gold,category,official",
    [
        ("The running shoes", "run shoe", 4, 1.0),  # Porter: running -> run, shoes -> shoe
        ("Paris, Lisbon", "Lisbon, Rome, Paris", 1, 2 / 3),  # mean over gold parts of the best part: (1 + 0 + 1) / 3
        ("yes", "Likely yes; because she likes it", 3, 2 / 3),  # gold up to ';': {like, ye} vs {ye}
        ("cats and dogs", "cats dogs", 2, 1.0),  # 'and' is dropped like an article
        ("7 May 2023", "7 May, 2023", 2, 1.0),
        ("She went hiking in the mountains", "hiking", 4, 1 / 3),  # P 1/5, R 1
        ("Lisbon", "Paris", 4, 0.0),
    ],
)
def test_locomo_f1_matches_the_official_evaluation(prediction, gold, category, official):
    assert locomo_scores(prediction, gold, category)["locomo_f1"] == pytest.approx(official)


def test_locomo_and_squad_scores_differ_where_the_definitions_do():
    assert answer_scores("cats and dogs", ["cats dogs"])["f1"] == pytest.approx(0.8)  # SQuAD keeps 'and'
    assert answer_scores("The running shoes", ["run shoe"])["f1"] == 0.0  # SQuAD does not stem
    assert normalize("The cat, and the Dog!") == "cat dog"


def test_locomo_bleu1_by_hand():
    assert locomo_scores("the red cars", "red car", 4)["locomo_bleu1"] == 1.0
    assert locomo_scores("red", "red car", 4)["locomo_bleu1"] == pytest.approx(0.36788, abs=1e-5)  # exp(1 - 2/1)
    assert locomo_scores("blue", "red", 4)["locomo_bleu1"] == 0.0  # no smoothing


def test_category_5_and_missing_gold_are_not_scored_but_no_answer_is_zero():
    assert locomo_scores("anything", "x", 5) == {"locomo_f1": None, "locomo_bleu1": None}
    assert locomo_scores("anything", "  ", 4) == {"locomo_f1": None, "locomo_bleu1": None}
    assert locomo_scores(None, "Lisbon", 4) == {"locomo_f1": 0.0, "locomo_bleu1": 0.0}


def test_memory_r1_eval_reports_locomo_scores_with_their_definitions(tokenizer, tmp_path):
    from memfactory_cli.config import load_recipe
    from memfactory_cli.generation.base import SamplingParams
    from memfactory_cli.workflows.common import build_agent, build_env
    from memfactory_cli.workflows.eval_sets import ResultsLog, evaluate_set
    from tests.test_memory_r1 import RECIPE, Scripted
    from tests.test_no_silent_zero import _question_row

    cfg = load_recipe(RECIPE, ["agent.modules.retriever.name=bm25"])
    agent, env = build_agent(cfg, tokenizer), build_env(cfg)

    class Policy(Scripted):
        sampling = SamplingParams(do_sample=False)

    log = ResultsLog(tmp_path / "results.jsonl")
    entry = evaluate_set(log, "s", "m", [_question_row()], agent, env, Policy(tokenizer, ["**Answer:** in Lisbon"]), cfg, 1, progress=lambda *a: None)
    assert entry["metrics"]["locomo_f1"]["mean"] == pytest.approx(2 / 3) and entry["metrics"]["f1"]["mean"] == pytest.approx(2 / 3)
    assert entry["metrics"]["em"]["mean"] == 0.0 and "Porter" in entry["metric_definitions"]["locomo_f1"]
