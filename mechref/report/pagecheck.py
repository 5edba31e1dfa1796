"""Open mechref's HTML pages in a real headless Chromium and say what did not work.

A page that exists is not a page that renders. :func:`check_pages` opens each page (Playwright
driving the system's Chromium, ``apt-get install chromium``; nothing is downloaded) and records
console errors and uncaught exceptions, resources that failed to load, links and embedded files
that point nowhere, Plotly figures that drew no SVG, and circuitsvis views that drew nothing into
their own container. It can save a screenshot of each page on the way, which is how the gallery
is made. ``pip install "mechref[browser]"`` installs Playwright.

>>> import tempfile, pathlib
>>> page = pathlib.Path(tempfile.mkdtemp()) / "p.html"
>>> _ = page.write_text('<a href="missing.json">x</a><script>undefinedName()</script>')
>>> [check.problems for check in check_pages([page])]  # doctest: +SKIP
[['uncaught error: undefinedName is not defined', 'link to a missing file: missing.json']]
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import unquote, urlsplit

from mechref.errors import BrowserUnavailableError
from mechref.report.plotting import find_chromium

# Seconds a page may take to load and draw its figures (a circuitsvis page holds 3 MB of script).
PAGE_TIMEOUT_S = 60

# Runs inside the page: what was drawn, and every local file the page refers to.
_INSPECT = """() => {
  const plotly = [...document.querySelectorAll('.plotly-graph-div')];
  const views = [...document.querySelectorAll('div[id^="circuits-vis"]')];
  const refs = [...document.querySelectorAll('a[href], img[src], iframe[src], script[src], link[href]')]
    .map(e => e.getAttribute('href') ?? e.getAttribute('src'));
  return {
    plotly: plotly.length,
    plotly_drawn: plotly.filter(d => d.querySelector('svg.main-svg')).length,
    views: views.length,
    // Drawn into its own container: holds elements and is not inside another view.
    views_drawn: views.filter(v => v.children.length > 0 && !v.parentElement.closest('div[id^="circuits-vis"]')).length,
    refs: refs,
  };
}"""
_DRAWN = """() => [...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))
  && [...document.querySelectorAll('div[id^="circuits-vis"]')].every(v => v.children.length > 0)"""


@dataclass
class PageCheck:
    """What opening one page in the browser showed."""

    path: Path
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    plotly_figures: int = 0
    plotly_drawn: int = 0
    circuitsvis_views: int = 0
    circuitsvis_drawn: int = 0
    warnings: int = 0
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        """Every failure, one line each; empty for a page that works."""
        out = [f"uncaught error: {e}" for e in self.page_errors]
        out += [f"console error: {e}" for e in self.console_errors if not any(e in p for p in self.page_errors)]
        out += [f"failed to load: {url}" for url in self.failed_requests]
        out += [f"link to a missing file: {name}" for name in self.missing_files]
        if self.plotly_drawn < self.plotly_figures:
            out.append(f"{self.plotly_figures - self.plotly_drawn} of {self.plotly_figures} Plotly figures drew no SVG")
        if self.circuitsvis_drawn < self.circuitsvis_views:
            out.append(
                f"{self.circuitsvis_views - self.circuitsvis_drawn} of {self.circuitsvis_views} circuitsvis views "
                "drew nothing into their own container"
            )
        return out


def local_target(page: Path, reference: str) -> Path | None:
    """The file a link or ``src`` of ``page`` points to, or ``None`` for a URL, an anchor or ``javascript:``.

    >>> local_target(Path("/r/index.html"), "figs/a.html#top"), local_target(Path("/r/i.html"), "https://x.org")
    (PosixPath('/r/figs/a.html'), None)
    """
    parts = urlsplit(reference)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    return (page.parent / unquote(parts.path)).resolve()


def _launch(playwright):
    browser = find_chromium()
    if browser is None:
        raise BrowserUnavailableError("no Chromium on the PATH to open pages with; apt-get install chromium")
    return playwright.chromium.launch(executable_path=browser, args=["--no-sandbox", "--disable-gpu"])


def check_pages(
    paths: Iterable[str | Path],
    screenshots: str | Path | None = None,
    width: int = 1000,
    height: int = 700,
    timeout_s: float = PAGE_TIMEOUT_S,
) -> list[PageCheck]:
    """Open each page in headless Chromium and return what it showed, in order.

    Each page has ``timeout_s`` seconds to load and draw its figures.

    With ``screenshots`` (a folder), also save ``<page stem>.png`` of each page's full height at
    ``width`` pixels, after its figures drew.
    """
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise BrowserUnavailableError('checking pages needs Playwright: pip install "mechref[browser]"') from error
    pages = [Path(p).resolve() for p in paths]
    for path in pages:
        if not path.is_file():
            raise FileNotFoundError(f"no page {path} to open")
    shots = Path(screenshots) if screenshots is not None else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    results = []
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            for path in pages:
                check = PageCheck(path)
                page = browser.new_page(viewport={"width": width, "height": height})

                def on_console(message, check=check):
                    if message.type == "error":
                        check.console_errors.append(message.text[:300])
                    elif message.type == "warning":
                        check.warnings += 1

                page.on("console", on_console)
                page.on("pageerror", lambda error, check=check: check.page_errors.append(str(error)[:300]))
                page.on("requestfailed", lambda request, check=check: check.failed_requests.append(request.url))
                page.goto(path.as_uri(), wait_until="load", timeout=timeout_s * 1000)
                # What did not draw by then is counted just below and reported as a problem.
                with contextlib.suppress(PlaywrightTimeout):
                    page.wait_for_function(_DRAWN, timeout=timeout_s * 1000)
                found = page.evaluate(_INSPECT)
                check.plotly_figures, check.plotly_drawn = found["plotly"], found["plotly_drawn"]
                # Containers the page's source declares: one the browser lost (drawn over by an
                # earlier view) is missing from the DOM but still counts as a view not drawn.
                declared = len(set(re.findall(r'<div[^<>]*id="(circuits-vis-[^"]+)"', path.read_text(errors="replace"))))
                check.circuitsvis_views, check.circuitsvis_drawn = max(declared, found["views"]), found["views_drawn"]
                targets = {ref: local_target(path, ref) for ref in found["refs"] if ref}
                check.missing_files = sorted({ref for ref, target in targets.items() if target and not target.exists()})
                if shots is not None:
                    check.screenshot = shots / f"{path.stem}.png"
                    page.screenshot(path=str(check.screenshot), full_page=True)
                page.close()
                results.append(check)
        finally:
            browser.close()
    return results
