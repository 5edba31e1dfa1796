"""Refusal across languages (Wang et al. 2025): per-language refusal vectors, their cosine
parallelism, and how well harmful and harmless prompts separate in each language.

:mod:`~mechref.multilingual.metrics` holds the measures (cosine matrices, silhouette scores,
PCA projections) as plain functions of activations.
"""
