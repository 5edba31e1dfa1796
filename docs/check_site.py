"""Open every page of the built documentation site in headless Chromium and report what is broken.

    python docs/check_site.py                      # docs/_build/html, every page
    python docs/check_site.py --screenshots shots  # also a screenshot of each page

A page fails when it logs a console error or an uncaught exception, a resource fails to load,
a link or an image points at a file that does not exist, or a Plotly figure draws nothing
(:func:`mechref.report.pagecheck.check_pages`). The site must open from ``file://``: nothing
here is served. Exit 1 names each failing page and why; exit 2 when there is no site to check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("site", nargs="?", type=Path, default=ROOT / "docs" / "_build" / "html", help="the built site")
    parser.add_argument("--screenshots", type=Path, default=None, help="save a screenshot of each page here")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"no site at {args.site}: build it first (sphinx-build -W --keep-going -n -b html docs docs/_build/html)")
        return 2
    from mechref.report.pagecheck import check_pages

    # Sphinx's own helper pages (search, index of names) and the highlighted sources are checked too.
    pages = sorted(args.site.rglob("*.html"))
    checks = check_pages(pages, screenshots=args.screenshots)
    broken = [check for check in checks if check.problems]
    for check in broken:
        print(f"{check.path.relative_to(args.site)}: {'; '.join(check.problems)}")
    print(f"{len(pages)} pages opened in Chromium; {len(broken)} with problems")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
