"""Refusal per harm category: per-category directions, their cosines and cross-category
transfer, the refusal subspace they span, and which categories the single direction misses."""

from mechref.analyses.categories.data import CategoryData, load_category_data
from mechref.analyses.categories.pipeline import CategoriesResult, check_categories, run_categories
from mechref.analyses.categories.report import report_categories
from mechref.analyses.categories.settings import CategoriesSettings

__all__ = [
    "COMMAND",
    "CategoriesResult",
    "CategoriesSettings",
    "CategoryData",
    "check_categories",
    "load_category_data",
    "main",
    "report_categories",
    "run_categories",
]

from mechref.analyses.categories.command import COMMAND, main
