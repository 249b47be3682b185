import pytest

from memfactory_cli.config.schema import RewardSpec
from memfactory_cli.errors import UserError
from memfactory_cli.registry import registry
from memfactory_cli.rewards.base import build_reward_funcs
from memfactory_cli.rewards.qa import em, f1, last_boxed, normalize_answer, string_match_all, sub_em


@pytest.mark.parametrize(
    "text,expected",
    [
        ("so \\boxed{Paris}.", "Paris"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("first \\boxed{a} then \\boxed{b{c}d}", "b{c}d"),
        ("\\boxed {spaced}", "spaced"),
        ("\\boxed{unclosed", None),
        ("no box here", None),
    ],
)
def test_last_boxed_handles_nesting(text, expected):
    assert last_boxed(text) == expected


def test_normalisation_is_squad_style():
    assert normalize_answer("  The  Eiffel-Tower!! ") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"


def test_em_against_every_reference():
    assert em("the Paris", ["London", "paris"]) == 1.0
    assert em("Paris, France", ["paris"]) == 0.0
    assert em(None, ["paris"]) == 0.0


def test_sub_em_both_directions():
    assert sub_em("Paris, France", ["paris"]) == 1.0
    assert sub_em("Paris", ["Paris France"]) == 1.0
    assert sub_em("Rome", ["paris"]) == 0.0


def test_f1_hand_computed():
    # pred tokens {new, york, city}, gold {new, york}: P=2/3, R=1, F1=0.8
    assert f1("New York City", ["new york"]) == pytest.approx(0.8)
    assert f1("yes", ["no"]) == 0.0
    assert f1("red car", ["blue bike", "red bike"]) == pytest.approx(0.5)


def test_string_match_all_fraction():
    assert string_match_all("Words: ALPHA, beta", ["alpha", "beta", "gamma"]) == pytest.approx(2 / 3)


def test_reward_functions_score_chat_completions_and_return_none_without_references():
    reward = registry("reward").get("exact_match")
    completions = [[{"role": "assistant", "content": "\\boxed{Oslo}"}], [{"role": "assistant", "content": "Oslo"}]]
    assert reward(None, completions, answers=[["oslo"], ["oslo"]]) == [1.0, 0.0]
    assert reward(None, completions, answers=[[], ["oslo"]]) == [None, 0.0]
    assert reward(None, completions) == [None, None]


def test_format_reward_needs_box_budget_and_grounding():
    fmt = registry("reward").get("format")
    completions = ["\\boxed{Oslo}", "\\boxed{Oslo}", "Oslo", "\\boxed{zephyr-42}"]
    within = [True, False, True, True]
    context = ["Ada lives in Oslo."] * 4
    assert fmt(None, completions, memory_within_budget=within) == [1.0, 0.0, 0.0, 1.0]
    assert fmt(None, completions, memory_within_budget=within, context=context, grounded=True) == [1.0, 0.0, 0.0, 0.0]


def test_reward_specs_bind_args_and_reject_unknown_ones():
    funcs, weights = build_reward_funcs([RewardSpec(name="format", weight=0.5, args={"grounded": True})])
    assert funcs[0].__name__ == "format" and weights == [0.5]
    assert funcs[0](None, ["\\boxed{x}"], context=["no"]) == [0.0]
    with pytest.raises(UserError, match="takes no such argument"):
        build_reward_funcs([RewardSpec(name="format", args={"groundd": True})])


def test_reference_spans_are_raw_spans_of_normalised_whole_word_matches():
    from memfactory_cli.rewards.qa import holds_reference, reference_spans

    text = "She said: the Eiffel-Tower, in PARIS! Not Parisian."
    assert [text[a:b] for a, b in reference_spans(text, ["eiffeltower", "Paris"])] == ["Eiffel-Tower", "PARIS"]
    assert [text[a:b] for a, b in reference_spans(text, ["in Paris"])] == ["in PARIS"]
    assert reference_spans(text, ["the"]) == [] and reference_spans(text, [""]) == []
    assert holds_reference("moved to Lisbon.", ["lisbon"]) and not holds_reference("Lisbonite", ["Lisbon"])


def test_holds_reference_is_reference_spans_found():
    import random

    from memfactory_cli.rewards.qa import holds_reference, reference_spans

    rng = random.Random(0)
    pieces = ["Lisbon", "lisbon.", "the", "A", "Lis", "bon", "New", "York", "new-york", "(York)", "an", "x"]
    for _ in range(400):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        refs = [" ".join(rng.choice(pieces) for _ in range(rng.randint(1, 2))) for _ in range(rng.randint(1, 2))]
        assert holds_reference(text, refs) == bool(reference_spans(text, refs)), (text, refs)
