"""Recipes: built-ins load, plans resolve, missing features are refused by name, files validate."""

from __future__ import annotations

import pytest

from kakeya_lib import cli
from kakeya_lib.errors import InputError
from kakeya_lib.llm import recipes
from kakeya_lib.llm.models import tiny_config


def test_builtin_recipes_load_and_seed_and_ours_families_exist():
    names = recipes.names()
    assert {"seed-tier1", "seed-tier1-fixed", "seed-v13-ppl", "seed-v14-pareto", "ours-k3v3-sink"} <= set(names)
    families = {recipes.load(n).family for n in names}
    assert families == {"seed", "ours"}


@pytest.mark.parametrize("name", recipes.names())
def test_every_builtin_either_plans_or_names_what_it_lacks(name):
    recipe = recipes.load(name)
    if recipe.missing:
        with pytest.raises(InputError, match=recipe.missing[0]):
            recipe.plan()
    else:
        plan = recipe.plan()
        assert plan.label == name
        assert len(plan.layer_codecs(tiny_config("llama"))) == 2


def test_seed_tier1_keeps_the_seeds_bugs_and_the_fixed_one_does_not():
    assert "legacy_ip_norm=1" in recipes.load("seed-tier1").k
    assert "legacy" not in recipes.load("seed-tier1-fixed").k


def test_recipe_files_are_validated(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\nk: kakeya:bits=4\nprotect_tokens: 2\n")
    assert recipes.load(str(good)).plan().protect_tokens == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nk: kakeya\nbits: 3\n")
    with pytest.raises(InputError, match="unknown recipe field"):
        recipes.load(str(bad))
    feature = tmp_path / "feature.yaml"
    feature.write_text("name: f\nk: kakeya\nrequires: [telepathy]\n")
    with pytest.raises(InputError, match="telepathy"):
        recipes.load(str(feature))
    with pytest.raises(InputError, match="built-in recipes"):
        recipes.load("no-such-recipe")


def test_cli_lists_recipes_and_refuses_mixed_flags(capsys):
    assert cli.main(["recipes"]) == 0
    assert capsys.readouterr().out.split() == recipes.names()
    assert cli.main(["eval", "--recipe", "ours-k3v3-sink", "--codec", "identity"]) == 2
    assert "--recipe" in capsys.readouterr().err
    assert cli.main(["eval", "--recipe", "seed-v13-ppl"]) == 2
    assert "qprecond" in capsys.readouterr().err
