import pytest

from memfactory_cli.errors import UserError
from memfactory_cli.registry import FAMILIES, Registry, registry


def test_every_family_exists_and_builtins_register():
    assert set(FAMILIES) >= {"recurrent_memory", "extractor", "updater", "retriever", "agent", "env", "reward", "dataset"}
    assert "memagent" in registry("agent").names()
    assert {"exact_match", "sub_em", "f1", "format", "string_match_all"} <= set(registry("reward").names())


def test_miss_lists_known_names_and_suggests():
    with pytest.raises(UserError) as err:
        registry("reward").get("exact_mach")
    message = str(err.value)
    assert "did you mean 'exact_match'" in message and "known: " in message and "f1" in message


def test_dotted_path_escape_hatch():
    func = registry("reward").get("tests.helpers:length_reward")
    assert func(None, ["abcd"]) == [0.4]


@pytest.mark.parametrize("path,match", [("tests.nope:f", "cannot import"), ("tests.helpers:nope", "has no attribute")])
def test_broken_dotted_path(path, match):
    with pytest.raises(UserError, match=match):
        registry("reward").get(path)


def test_decorator_registration_and_duplicates():
    reg = Registry("thing")

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(lambda: 2)
