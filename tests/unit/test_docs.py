"""The documentation site's generated parts cover what they must (docs/_ext/mechref_docs.py):
every option of every command is on the command reference, every results table is placed on a
results page. The site itself is built and opened in Chromium by the README's docs command."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import mechref_docs  # noqa: E402  (docs/_ext; Sphinx comes with the test extra)


def test_every_command_is_on_the_reference():
    from mechref.cli import ANALYSES

    assert mechref_docs.command_names() == ["mechref", *ANALYSES]


@pytest.mark.parametrize("name", ["mechref", "refusal_direction", "judge", "export"])
def test_every_option_of_a_command_is_on_its_reference_section(name):
    parser = mechref_docs.command_parser(name)
    text = "\n".join(mechref_docs.command_markdown(name))
    options = [s for action in parser._actions for s in action.option_strings if s not in ("-h", "--help")]
    assert options, "the parser has no options: the reference would be empty"
    missing = [option for option in options if f"`{option}" not in text and f", {option}" not in text]
    assert missing == []


def test_an_option_added_to_a_settings_class_appears_on_the_reference(monkeypatch):
    """The reference reads the parser the command runs: a new option needs no edit of the docs."""
    from mechref.analyses.refusal_direction.command import COMMAND

    parser = COMMAND.parser()
    parser.add_argument("--brand-new-option", type=int, default=3, help="an option added after the docs were written")
    monkeypatch.setattr(COMMAND, "parser", lambda: parser)
    text = "\n".join(mechref_docs.command_markdown("refusal_direction"))
    assert "`--brand-new-option BRAND_NEW_OPTION`" in text and "an option added after the docs were written" in text
    assert "| `3` |" in text


def test_option_rows_show_the_default_and_the_choices():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["a", "b"], default="a", help="which mode")
    parser.add_argument("--flag", action="store_true", help="a switch")
    text = "\n".join(mechref_docs.options_markdown(parser))
    assert "| `--mode {a,b}` | `a` | which mode |" in text
    assert "| `--flag` |  | a switch |" in text  # a switch has no default to show


def _tables():
    spec = importlib.util.spec_from_file_location("benchmark_tables", ROOT / "benchmarks" / "tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_results_table_is_placed_once_on_a_results_page():
    placed = [
        name
        for page in sorted((ROOT / "docs").rglob("*.md"))
        for name in re.findall(r"^```\{mechref-table\} (\w+)$", page.read_text(encoding="utf-8"), re.M)
    ]
    assert sorted(placed) == sorted(_tables().RENDERERS)


@pytest.mark.parametrize("name", sorted(_tables().RENDERERS))
def test_each_results_table_draws_from_its_json(name):
    table = _tables().RENDERERS[name]()
    rows = [line for line in table.split("\n") if line.startswith("|")]
    assert len(rows) >= 3 and set(rows[1]) <= set("|-: ")  # a header, its rule, at least one row


def test_executed_notebooks_are_read_as_tutorials_not_as_pages_of_their_own():
    # docs/_executed/ lies inside the source folder: read as pages too, every notebook would be
    # "in no toctree" and its Plotly outputs "an unknown mime type", failing the -W build.
    spec = importlib.util.spec_from_file_location("docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    assert conf.EXECUTED.parent == DOCS
    assert conf.EXECUTED.name in conf.exclude_patterns
    notebook = {"cells": [{"outputs": [{"data": {conf.PLOTLY_JSON: {"data": [{"y": [1]}], "layout": {"height": 300}}}}]}]}
    (output,) = conf._plotly_as_html(notebook, "nb")["cells"][0]["outputs"]
    # Drawn once the theme's scripts (plotly.js among them, placed after the body) have loaded.
    assert conf.PLOTLY_JSON not in output["data"]
    assert 'window.addEventListener("load"' in output["data"]["text/html"]
    assert "height:300px" in output["data"]["text/html"]
