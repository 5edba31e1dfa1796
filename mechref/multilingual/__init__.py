"""Refusal across languages (Wang et al. 2025): per-language refusal vectors, their cosine
parallelism, and how well harmful and harmless prompts separate in each language.

:mod:`~mechref.multilingual.metrics` holds the measures (cosine matrices, silhouette scores,
PCA projections) as plain functions of activations.
"""

from mechref.multilingual.pipeline import PARTS, MultilingualResult, run_multilingual
from mechref.multilingual.report import report_multilingual
from mechref.multilingual.settings import MultilingualSettings

__all__ = ["PARTS", "MultilingualResult", "MultilingualSettings", "report_multilingual", "run_multilingual"]
