"""Searching edits for the best trade-off of refusal removed against side effect (Optuna)."""

from mechref.optimize.pipeline import OptimizeResult, run_optimize_edit
from mechref.optimize.report import report_optimize_edit
from mechref.optimize.settings import OptimizeSettings

__all__ = ["OptimizeResult", "OptimizeSettings", "report_optimize_edit", "run_optimize_edit"]
