"""Refusal per harm category: per-category directions, their cosines and cross-category
transfer, the refusal subspace they span, and which categories the single direction misses."""

from mechref.categories.data import CategoryData, load_category_data
from mechref.categories.pipeline import CategoryResult, check_categories, run_categories
from mechref.categories.report import report_categories
from mechref.categories.settings import CategorySettings

__all__ = [
    "CategoryData",
    "CategoryResult",
    "CategorySettings",
    "check_categories",
    "load_category_data",
    "report_categories",
    "run_categories",
]
