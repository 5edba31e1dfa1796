"""What every analysis's run and report share: a clock that times and announces stages, and the
``index.html`` page that links a run folder's figures.

>>> clock = StageClock(total=2, echo=False)
>>> clock.stage("first")
>>> clock.stage("second")
>>> sorted(clock.timings), clock.step
(['first'], 2)
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mechref.io import atomic_path


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
    _current: str | None = None
    _since: float = field(default_factory=time.perf_counter)
    _start: float = field(default_factory=time.perf_counter)

    def stage(self, name: str, description: str | None = None) -> None:
        self._close()
        self.step += 1
        self._current = name
        if self.echo:
            print(f"[{self.step}/{self.total}] {description or name} …", flush=True)

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


def write_index(
    out: str | Path,
    title: str,
    intro_html: str,
    summary_text: str,
    links: Sequence[str],
    extra_links: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write ``out/index.html``: a title, an introduction (HTML), the text summary and links to
    every figure (``links``: file names in ``out``) and other artifacts (``(file, description)``).

    >>> import tempfile
    >>> page = write_index(tempfile.mkdtemp(), "T", "<p>x</p>", "a 1", ["f.html"], [("s.json", "numbers")])
    >>> "f.html" in page.read_text() and "numbers" in page.read_text()
    True
    """
    out = Path(out)
    figure_items = "".join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a></li>' for f in links if f.endswith(".html"))
    other_items = "".join(
        f'<li><a href="{html.escape(f)}">{html.escape(f)}</a>: {html.escape(what)}</li>' for f, what in extra_links
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1100px}}
pre{{background:#f6f6f6;padding:12px;overflow-x:auto}}</style></head><body>
<h1>{html.escape(title)}</h1>
{intro_html}
<pre>{html.escape(summary_text)}</pre>
<h2>Figures</h2><ul>{figure_items}</ul>
<h2>Data</h2><ul>{other_items}</ul>
</body></html>"""
    path = out / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
