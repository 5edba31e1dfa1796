"""Quickstart: the whole stack in one run on the embedded model.

Loads the model, formats chats, captures the difference-in-means refusal direction at one layer
from the bundled training prompts (running means, no activation cache), then generates replies
to held-out prompts: harmful ones with and without the direction ablated, harmless ones with and
without it added. Prints the replies and refusal rates; writes ``summary.json`` and the direction.

    python -m mechref.analyses.quickstart --n-train 32 --n-eval 6 --out runs/quickstart

In Python: mechref.analyses.quickstart.run_quickstart.
"""

from __future__ import annotations

from typing import Sequence

from mechref.analyses.command import AnalysisCommand
from mechref.analyses.quickstart import QuickstartSettings, check_quickstart, report_quickstart, run_quickstart
from mechref.model.settings import ModelSettings

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.quickstart",
    __doc__,
    QuickstartSettings,
    run_quickstart,
    report_quickstart,
    default_out="runs/quickstart",
    check=check_quickstart,
    model_defaults=ModelSettings(dtype="float32"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); the exit code (0, 1 on a crash, 2 on bad
    input)."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
