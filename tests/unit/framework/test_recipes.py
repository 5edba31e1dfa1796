"""Every recipe in analyses/ is a valid configuration of the command whose folder it sits in."""

import importlib
from pathlib import Path

import pytest

from mechref.model.settings import ModelSettings

RECIPES = sorted((Path(__file__).resolve().parents[3] / "analyses").glob("*/*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_parses(recipe):
    command = importlib.import_module(f"mechref.analyses.{recipe.parent.name}")
    model, settings, out = command.COMMAND.parse(["--config", str(recipe)])
    assert isinstance(model, ModelSettings) and isinstance(settings, command.COMMAND.settings)
    assert out is not None and str(out).startswith("runs/")  # recipes never write into the repository's sources


def test_there_are_recipes():
    assert len(RECIPES) >= 5
