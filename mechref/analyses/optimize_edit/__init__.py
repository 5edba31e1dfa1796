"""Searching edits for the best trade-off of refusal removed against side effect (Optuna)."""

from mechref.analyses.optimize_edit.pipeline import OptimizeEditResult, run_optimize_edit
from mechref.analyses.optimize_edit.report import report_optimize_edit
from mechref.analyses.optimize_edit.settings import OptimizeEditSettings

__all__ = [
    "COMMAND",
    "OptimizeEditResult",
    "OptimizeEditSettings",
    "main",
    "report_optimize_edit",
    "run_optimize_edit",
]

from mechref.analyses.optimize_edit.command import COMMAND, main
