"""The refusal direction of Arditi et al. (2024): extraction, selection, orthogonalization, evaluation."""

from mechref.refusal.candidates import CandidateDirections, extract_candidates
from mechref.refusal.orthogonalize import export_orthogonalized, orthogonalize_weights
from mechref.refusal.selection import AllCandidatesFilteredError, CandidateScores, SelectionResult, select_direction

__all__ = [
    "AllCandidatesFilteredError", "CandidateDirections", "CandidateScores", "SelectionResult",
    "export_orthogonalized", "extract_candidates", "orthogonalize_weights", "select_direction",
]
