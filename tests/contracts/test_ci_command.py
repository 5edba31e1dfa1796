"""`.ci/run` runs the README's test command and its docs command (pip's -q aside), so what CI
checks is what a contributor runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_command(heading: str) -> str:
    """The first bash block after ``heading`` in the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    return re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()


def readme_test_command() -> str:
    return readme_command("## Run the tests")


def test_ci_runs_the_readmes_test_command():
    command = readme_test_command()
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command.replace("pip install ", "pip install -q ", 1) in lines
    # Every tier runs: the integration tier is not left out of the whole.
    assert 'pytest -m "not integration"' in command and "pytest -m integration" in command


def test_ci_builds_and_checks_the_documentation_as_the_readme_says():
    command = readme_command("**Documentation:**")
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command.replace("pip install ", "pip install -q ", 1) in lines
    assert "sphinx-build -W" in command and "docs/check_site.py" in command
    # After the tests: the tutorials are the notebooks the integration tier just executed.
    assert lines.index(command.replace("pip install ", "pip install -q ", 1)) > lines.index(
        readme_test_command().replace("pip install ", "pip install -q ", 1)
    )
