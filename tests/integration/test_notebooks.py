"""Every workshop notebook runs end to end on the embedded model, at reduced sizes.

The notebooks are the source a teacher edits; each has one cell tagged ``parameters`` holding its
sizes. The test appends smaller sizes to that cell and executes the notebook in a fresh kernel, in
a temporary folder, so a broken cell fails the suite.
"""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import EMBEDDED_DTYPE

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

OVERRIDES = {
    "01_quickstart": {"N_TRAIN": 16, "N_EVAL": 2, "MAX_NEW_TOKENS": 16},
    "02_refusal_direction": {"N_TRAIN": 16, "N_VAL": 8, "N_EVAL": 2, "MAX_NEW_TOKENS": 16, "TOP_K": 2, "PROXY_PROMPTS": 2},
    "03_suffix_hijack": {"N": 2, "TOP_K": 2, "MAX_NEW_TOKENS": 16},
    "04_multilingual": {"LANGUAGES": ["en", "de"], "N_TRAIN": 8, "N_TEST": 4, "MAX_NEW_TOKENS": 16},
    "05_categories": {
        "CATEGORIES": ["cybercrime", "weapons", "fraud"],
        "MAX_PER_CATEGORY": 8,
        "N_COMPONENTS": 2,
        "N_GENERATE": 1,
        "N_KL": 8,
        "MAX_NEW_TOKENS": 8,
    },
}


def with_parameters(notebook, values: dict) -> None:
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    cell.source += "\n# set by the test suite\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_notebook_runs(name, tmp_path, refusal_run):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    values = {**OVERRIDES[name], "DTYPE": EMBEDDED_DTYPE}
    with_parameters(notebook, {**values, "DIRECTION_RUN": str(refusal_run)} if name >= "03" else values)
    try:
        NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        shutil.rmtree(tmp_path / "runs" / "notebook-orthogonalized", ignore_errors=True)  # a full-size model
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
