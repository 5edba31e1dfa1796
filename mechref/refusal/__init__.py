"""The refusal direction of Arditi et al. (2024): extraction, selection, orthogonalization,
evaluation, and the analysis that runs them (:func:`run_refusal_direction`)."""

from mechref.refusal.candidates import CandidateDirections, extract_candidates
from mechref.refusal.orthogonalize import export_orthogonalized, orthogonalize_weights
from mechref.refusal.pipeline import RefusalDirectionResult, run_refusal_direction
from mechref.refusal.report import report_refusal_direction
from mechref.refusal.selection import AllCandidatesFilteredError, CandidateScores, SelectionResult, select_direction
from mechref.refusal.settings import RefusalDirectionSettings

__all__ = [
    "AllCandidatesFilteredError",
    "CandidateDirections",
    "CandidateScores",
    "RefusalDirectionResult",
    "RefusalDirectionSettings",
    "SelectionResult",
    "export_orthogonalized",
    "extract_candidates",
    "orthogonalize_weights",
    "report_refusal_direction",
    "run_refusal_direction",
    "select_direction",
]
