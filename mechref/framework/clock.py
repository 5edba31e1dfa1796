"""The clock every analysis's stages run on: ``stage(name)`` closes the previous stage and
opens the next, announcing and timing each.

>>> clock = StageClock(total=2, echo=False)
>>> clock.stage("first")
>>> clock.stage("second")
>>> sorted(clock.timings), clock.step
(['first'], 2)
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass, field

from mechref.framework import memory

# What a clock created now prints before its stage numbers: empty at the top level, an indented
# label inside a sub-run (e.g. the refusal direction computed on first use by another analysis).
_PREFIX: contextvars.ContextVar[str] = contextvars.ContextVar("mechref_stage_prefix", default="")


@contextlib.contextmanager
def sub_run(label: str):
    """Number the stages of a run started inside a stage as its own indented sequence.

    >>> with sub_run("direction"):
    ...     StageClock(total=1).stage("select", "selecting")
          ↳ direction [1/1] selecting …
    """
    token = _PREFIX.set(f"{_PREFIX.get() or '      '}↳ {label} ")
    try:
        yield
    finally:
        _PREFIX.reset(token)


@dataclass
class StageClock:
    """Numbers and times the stages of a run: ``stage(name)`` closes the previous stage and opens the next.

    Prints ``[i/total] description`` as each stage starts (``echo``); ``timings`` holds seconds per
    finished stage; ``finish()`` closes the last one and returns the total.
    """

    total: int
    echo: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    step: int = 0
    prefix: str = field(default_factory=_PREFIX.get)
    _current: str | None = None
    _since: float = field(default_factory=time.perf_counter)
    _start: float = field(default_factory=time.perf_counter)

    def stage(self, name: str, description: str | None = None) -> None:
        """Close the current stage (its time is recorded) and open stage ``name``, printing ``[i/total]
        description``."""
        self._close()
        self.step += 1
        self._current = name
        memory.mark("/".join([*self.prefix.replace("↳", " ").split(), name]))
        if self.echo:
            print(f"{self.prefix}[{self.step}/{self.total}] {description or name} …", flush=True)

    def note(self, text: str) -> None:
        """A detail of the current stage, printed indented."""
        if self.echo:
            print(f"      {text}", flush=True)

    def _close(self) -> None:
        now = time.perf_counter()
        if self._current is not None:
            self.timings[self._current] = round(self.timings.get(self._current, 0.0) + now - self._since, 2)
        self._current, self._since = None, now

    def finish(self) -> float:
        """Close the last stage; the seconds since the clock started."""
        self._close()
        return round(time.perf_counter() - self._start, 2)
