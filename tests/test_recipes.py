"""Recipes: built-ins load, plans resolve, missing features are refused by name, files validate."""

from __future__ import annotations

import dataclasses

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
        if plan.layer_steps == "auto":  # its factors are measured on the model: building codecs before is an error
            with pytest.raises(InputError, match="layer_steps=auto is not resolved"):
                plan.layer_codecs(tiny_config("llama"))
            plan = dataclasses.replace(plan, k_step_scale=(1.0, 2.0), v_step_scale=(0.5, 1.0))
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



def test_a_recipe_needing_a_missing_feature_is_refused_by_name(monkeypatch, capsys):
    monkeypatch.setattr(recipes, "IMPLEMENTED_FEATURES", frozenset({"qprecond"}))
    assert recipes.load("seed-v14-pareto").missing == ["besicovitch"]
    assert cli.main(["eval", "--recipe", "seed-v14-pareto"]) == 2
    assert "besicovitch" in capsys.readouterr().err


def test_cli_refuses_calibrating_on_the_evaluation_split(capsys):
    assert cli.main(["eval", "--codec", "kakeya", "--qprecond", "calib", "--split", "calib"]) == 2
    assert "calib split" in capsys.readouterr().err
    assert cli.main(["eval", "--recipe", "ours-klt", "--split", "calib"]) == 2  # its tables fit on calib
    assert "calib split" in capsys.readouterr().err
    assert cli.main(["eval", "--recipe", "ours-k3v3-sink", "--qprecond", "calib"]) == 2
    assert "names the whole configuration" in capsys.readouterr().err


def test_every_seed_recipe_now_plans():
    for name in recipes.names():
        assert recipes.load(name).missing == [], name
        recipes.load(name).plan()


def test_seed_v13_ppl_plans_with_preconditioning_and_calibrated_codebooks():
    recipe = recipes.load("seed-v13-ppl")
    assert recipe.missing == []
    plan = recipe.plan()
    assert plan.qprecond == "calib" and plan.qprecond_variant == "plain" and plan.qprecond_skip == (0,)
    assert plan.calibrated_codebook and plan.boundary == 3
    assert "outlier=2.0" in plan.k and "share_basis=1" in plan.v
    assert {"qprecond", "calibrated_codebook"} <= recipes.IMPLEMENTED_FEATURES


def test_calibration_fields_are_validated(tmp_path):
    good = tmp_path / "q.yaml"
    good.write_text("name: q\nk: kakeya:bits=3\nqprecond: calib\nqprecond_variant: rope\n"
                    "qprecond_skip: [0, -1]\ncalibrated_codebook: true\nrequires: [qprecond]\n")
    plan = recipes.load(str(good)).plan()
    assert (plan.qprecond, plan.qprecond_variant, plan.qprecond_skip, plan.calibrated_codebook) == (
        "calib", "rope", (0, -1), True)
    for body, message in (("qprecond_skip: [a]", "qprecond_skip"), ("calibrated_codebook: maybe", "calibrated_codebook"),
                          ("qprecond_variant: odd\nqprecond: calib", "qprecond_variant"),
                          ("saliency_queries: -4", "saliency_queries"), ("saliency_queries: many", "saliency_queries")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"name: bad\nk: kakeya\n{body}\n")
        with pytest.raises(InputError, match=message):
            recipes.load(str(bad)).plan()
    salient = tmp_path / "s.yaml"
    salient.write_text("name: s\nk: klt:calib=auto,saliency=0.25\nsaliency_queries: 64\n")
    assert recipes.load(str(salient)).plan().saliency_queries == 64
    lacking = tmp_path / "lacking.yaml"
    lacking.write_text("name: lacking\nk: kakeya\nrequires: [qprecond]\n")
    with pytest.raises(InputError, match="sets no 'qprecond'"):
        recipes.load(str(lacking)).plan()
