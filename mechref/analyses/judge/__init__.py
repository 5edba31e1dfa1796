"""The ``judge`` command: label any file of replies with a refusal judge, and measure the judge
where labels are given (``python -m mechref.analyses.judge``). The judges themselves are
:mod:`mechref.judges`."""

from mechref.analyses.judge.command import main

__all__ = ["main"]
