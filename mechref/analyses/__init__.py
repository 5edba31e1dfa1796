"""Analyses runnable as ``python -m mechref.analyses.<name>``."""
