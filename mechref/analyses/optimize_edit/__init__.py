"""Searching edits for the best trade-off of refusal removed against side effect (Optuna)."""

from mechref.analyses.optimize_edit.pipeline import OptimizeResult, run_optimize_edit
from mechref.analyses.optimize_edit.report import report_optimize_edit
from mechref.analyses.optimize_edit.settings import OptimizeSettings

__all__ = [
    "COMMAND",
    "OptimizeResult",
    "OptimizeSettings",
    "main",
    "report_optimize_edit",
    "run_optimize_edit",
]

from mechref.analyses.optimize_edit.command import COMMAND, main
