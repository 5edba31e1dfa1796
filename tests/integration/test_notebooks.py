"""Every workshop notebook runs end to end on the embedded model, at reduced sizes.

The notebooks are the source a teacher edits; each has one cell tagged ``parameters`` holding its
sizes. The test appends smaller sizes to that cell and executes the notebook in a fresh kernel, in
a temporary folder, so a broken cell fails the suite. With ``MECHREF_EXECUTED_NOTEBOOKS=DIR`` it
writes each executed notebook there (the documentation renders them as its tutorials).
"""

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import CATEGORIES, EMBEDDED_DTYPE, MULTILINGUAL

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

# Sizes that exercise every cell, not the science: the analysis commands' tests in this tier check
# the numbers on the embedded model with the same functions. Notebook 02 loads the shared
# refusal-direction run's selection (SELECTION_RUN); 04 and 05 are given the settings and the folder
# of the multilingual and category commands' runs (conftest.py) and read every stage from them.
OVERRIDES = {
    "01_quickstart": {"N_TRAIN": 16, "N_EVAL": 2, "MAX_NEW_TOKENS": 12},
    "02_refusal_direction": {"N_TRAIN": 8, "N_EVAL": 1, "MAX_NEW_TOKENS": 8},
    "03_suffix_hijack": {"N": 2, "TOP_K": 2, "MAX_NEW_TOKENS": 8},
    "04_multilingual": {"LANGUAGES": ["en", "zh"], "N_TRAIN": 8, "N_TEST": 8, "MAX_NEW_TOKENS": 16},
    "05_categories": {
        "CATEGORIES": ["cybercrime", "weapons", "fraud"],
        "MAX_PER_CATEGORY": 8,
        "N_COMPONENTS": 2,
        "N_GENERATE": 2,
        "N_KL": 4,
        "MAX_NEW_TOKENS": 16,
    },
}
# The run a notebook reads its stages from (a fixture of conftest.py) and the settings it must share.
SHARED_RUN = {"04_multilingual": ("multilingual_run", MULTILINGUAL), "05_categories": ("categories_run", CATEGORIES)}


# The parameters that name a folder of this machine, and what that folder holds.
PATHS = {
    "OUT": "a folder of the test suite",
    "DIRECTION_RUN": "a refusal_direction run of the test suite",
    "SELECTION_RUN": "a refusal_direction run of the test suite",
}


def with_parameters(notebook, values: dict) -> None:
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    cell.source += "\n# set by the test suite\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_notebook_runs(name, tmp_path, refusal_run, request):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    values = {**OVERRIDES[name], "DTYPE": EMBEDDED_DTYPE}
    if name >= "03":
        values["DIRECTION_RUN"] = str(refusal_run)
    if name == "02_refusal_direction":
        values["SELECTION_RUN"] = str(refusal_run)
    shared = None
    if name in SHARED_RUN:
        fixture, settings = SHARED_RUN[name]
        # The notebook's sizes are the command's settings, or it would compute its own run.
        notebook_settings = {k.lower(): v for k, v in OVERRIDES[name].items()}
        assert {k: v for k, v in settings.items() if k in notebook_settings} == notebook_settings
        shared = request.getfixturevalue(fixture)
        values["OUT"] = str(shared)
        manifests = {p.name: p.stat().st_mtime_ns for p in shared.glob("*.manifest.json")}
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    as_written = parameters.source
    with_parameters(notebook, values)
    try:
        NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        shutil.rmtree(tmp_path / "runs" / "notebook-orthogonalized", ignore_errors=True)  # a full-size model
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    if shared is not None:
        # Every stage was read from the command's run: none computed again, none rewritten.
        assert {p.name: p.stat().st_mtime_ns for p in shared.glob("*.manifest.json")} == manifests
    # The documentation's tutorials are these executed copies (docs/conf.py), written where asked.
    executed = os.environ.get("MECHREF_EXECUTED_NOTEBOOKS")
    if executed:
        Path(executed).mkdir(parents=True, exist_ok=True)
        # The reader sees the notebook's own parameters and the sizes it ran at, not this machine's paths.
        parameters.source = (
            as_written
            + "\n# This copy ran at smaller sizes, on runs the test suite made:\n"
            + "".join(f"# {k} = {v!r}\n" if k not in PATHS else f"# {k} = <{PATHS[k]}>\n" for k, v in values.items())
        )
        nbformat.write(notebook, Path(executed) / f"{name}.ipynb")
