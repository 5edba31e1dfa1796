"""Refusal across languages (Wang et al. 2025): per-language refusal vectors, their cosine
parallelism, and how well harmful and harmless prompts separate in each language.

:mod:`~mechref.analyses.multilingual.metrics` holds the measures (cosine matrices, silhouette scores,
PCA projections) as plain functions of activations.
"""

from mechref.analyses.multilingual.pipeline import PARTS, MultilingualResult, run_multilingual
from mechref.analyses.multilingual.report import report_multilingual
from mechref.analyses.multilingual.settings import MultilingualSettings

__all__ = [
    "COMMAND",
    "PARTS",
    "MultilingualResult",
    "MultilingualSettings",
    "main",
    "report_multilingual",
    "run_multilingual",
]

from mechref.analyses.multilingual.command import COMMAND, main
