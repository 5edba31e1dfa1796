"""The notebooks are committed as sources: no outputs, one parameters cell each."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_a_clean_source(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip the outputs before committing"
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


def test_every_notebook_is_executed_by_the_suite():
    import ast

    source = (Path(__file__).parents[1] / "integration" / "test_notebooks.py").read_text()
    (overrides,) = [n.value for n in ast.parse(source).body if isinstance(n, ast.Assign) and n.targets[0].id == "OVERRIDES"]
    assert sorted(ast.literal_eval(overrides)) == [p.stem for p in NOTEBOOKS]
