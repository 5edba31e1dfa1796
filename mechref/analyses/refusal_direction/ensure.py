"""The refusal direction other analyses start from: read from a run folder, or computed there
first with this analysis (so an analysis that needs a direction works on first use)."""

from __future__ import annotations

from pathlib import Path

from mechref.analyses.refusal_direction.pipeline import run_refusal_direction
from mechref.analyses.refusal_direction.report import report_refusal_direction
from mechref.analyses.refusal_direction.settings import FIRST_USE
from mechref.directions.store import StoredDirection, load_direction, stored_model
from mechref.framework.clock import sub_run
from mechref.model.loading import MechrefModel


def ensure_direction(model: MechrefModel, run_dir: str | Path, *, echo: bool = True) -> StoredDirection:
    """The direction in ``run_dir``, computed there first with the refusal-direction analysis
    (selection only, bundled prompts, :data:`~mechref.analyses.refusal_direction.settings.FIRST_USE` settings) when it is
    absent or belongs to another model. ``model`` is reused.
    """
    if stored_model(run_dir) != model.name:
        if echo:
            print(
                f"no refusal direction of {model.name} in {run_dir}; computing it with the refusal-direction "
                "analysis (selection only, bundled prompts) …",
                flush=True,
            )
        with sub_run("direction"):
            result = run_refusal_direction(model, FIRST_USE, out=run_dir, echo=echo)
        report_refusal_direction(result, run_dir, echo=False)
    return load_direction(run_dir)
