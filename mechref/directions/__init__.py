"""Directions in the residual stream: the :class:`Direction` value (vector, layer, position, model,
provenance) with its verbs, difference-in-means candidates over layers and positions, and the
direction file every analysis reads."""

from mechref.directions.candidates import CandidateDirections, extract_candidates
from mechref.directions.direction import Direction, diff_in_means
from mechref.directions.store import StoredDirection, load_direction

__all__ = ["CandidateDirections", "Direction", "StoredDirection", "diff_in_means", "extract_candidates", "load_direction"]
