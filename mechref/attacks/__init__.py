"""Adversarial attacks on refusal: GCG suffixes (:func:`run_gcg`), the suffix search as an analysis
(:func:`run_suffix_search`), and suffix files (:mod:`mechref.attacks.suffixes`)."""

from mechref.attacks.gcg import GCGResult, GCGSettings, run_gcg
from mechref.attacks.search import SuffixSearchSettings, check_suffix, run_suffix_search

__all__ = ["GCGResult", "GCGSettings", "SuffixSearchSettings", "check_suffix", "run_gcg", "run_suffix_search"]
