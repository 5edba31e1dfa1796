"""The multilingual analysis's tests run on tiny models, whose replies no probe reads usefully."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_probe_reader(monkeypatch):
    """``--judge auto`` would read English replies with the probe, loading the embedded model as its
    reader; here it picks among the other judges, as where the embedded model is not installed
    (:func:`test_command.test_auto_picks_the_judge_with_the_best_passing_check` covers the choice)."""
    from mechref.analyses.multilingual import pipeline

    monkeypatch.setattr(pipeline, "probe_usable", lambda: False)
