"""BENCHMARKS.md's tables are drawn from the committed JSON: a table edited by hand, or JSON
rewritten without redrawing its table, fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tables():
    spec = importlib.util.spec_from_file_location("benchmark_tables", ROOT / "benchmarks" / "tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_of_benchmarks_md_matches_its_json():
    tables = _tables()
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert sorted(tables.marked_tables(text)) == sorted(tables.RENDERERS)  # every table marked, every marker drawn
    _, changed, unknown = tables.render(text)
    assert not unknown
    assert not changed, f"tables {changed} differ from their JSON: run python benchmarks/tables.py"


def test_the_check_catches_a_number_edited_by_hand():
    tables = _tables()
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    drawn = tables.RENDERERS["suffix_hijack"]()
    first_rate = drawn.split("\n")[2].split(" | ")[1]  # the harmful row's rate cell
    edited = text.replace(first_rate, first_rate.replace("0.", "0.9", 1), 1)
    assert edited != text
    assert tables.render(edited)[1] == ["suffix_hijack"]
