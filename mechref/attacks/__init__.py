"""Adversarial attacks on refusal: the GCG suffix search (:func:`search_suffix`) and suffix files
(:mod:`mechref.attacks.suffixes`). The ``gcg`` analysis (:mod:`mechref.analyses.gcg`) runs the search
as a command."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["GCGResult", "SearchSettings", "search_suffix"]

if TYPE_CHECKING:  # pragma: no cover
    from mechref.attacks.gcg import GCGResult, SearchSettings, search_suffix


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that `python -m mechref.attacks.gcg` runs a module nothing imported yet.
    if name in __all__:
        return getattr(importlib.import_module("mechref.attacks.gcg"), name)
    raise AttributeError(f"module 'mechref.attacks' has no attribute {name!r}")
