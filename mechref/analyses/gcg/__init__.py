"""The ``gcg`` analysis: search an adversarial suffix with GCG and write it, with its provenance,
as a suffix file (``python -m mechref.analyses.gcg``)."""

from mechref.analyses.gcg.pipeline import check_gcg, check_gcg_fit, check_suffix, run_gcg
from mechref.analyses.gcg.settings import GCGSettings

__all__ = ["COMMAND", "GCGSettings", "check_gcg", "check_gcg_fit", "check_suffix", "main", "run_gcg"]

from mechref.analyses.gcg.command import COMMAND, main
