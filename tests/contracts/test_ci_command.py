"""`.ci/run` runs the README's test command (pip's -q aside), so what CI checks is what a
contributor runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_test_command() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Run the tests") :]
    return re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readmes_test_command():
    command = readme_test_command()
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command.replace("pip install ", "pip install -q ", 1) in lines
    # Every tier runs: the integration tier is not left out of the whole.
    assert 'pytest -m "not integration"' in command and "pytest -m integration" in command
