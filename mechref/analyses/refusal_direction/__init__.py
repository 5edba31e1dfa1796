"""The refusal direction of Arditi et al. (2024): extraction, selection, orthogonalization,
evaluation, and the analysis that runs them (:func:`run_refusal_direction`)."""

from mechref.analyses.refusal_direction.ensure import ensure_direction
from mechref.analyses.refusal_direction.pipeline import RefusalDirectionResult, run_refusal_direction
from mechref.analyses.refusal_direction.report import report_refusal_direction
from mechref.analyses.refusal_direction.selection import (
    AllCandidatesFilteredError,
    CandidateScores,
    SelectionResult,
    select_direction,
)
from mechref.analyses.refusal_direction.settings import RefusalDirectionSettings
from mechref.directions.candidates import CandidateDirections, extract_candidates
from mechref.edits.orthogonalize import export_orthogonalized, orthogonalize_weights

__all__ = [
    "COMMAND",
    "AllCandidatesFilteredError",
    "CandidateDirections",
    "CandidateScores",
    "RefusalDirectionResult",
    "RefusalDirectionSettings",
    "SelectionResult",
    "ensure_direction",
    "export_orthogonalized",
    "extract_candidates",
    "main",
    "orthogonalize_weights",
    "report_refusal_direction",
    "run_refusal_direction",
    "select_direction",
]

from mechref.analyses.refusal_direction.command import COMMAND, main
