"""Quickstart: the whole stack in one run on the embedded model.

Loads the model, formats chats, captures the difference-in-means refusal direction at one layer
from the bundled training prompts (running means, no activation cache), then generates replies
to held-out prompts: harmful ones with and without the direction ablated, harmless ones with and
without it added. Prints the replies and refusal rates; writes ``summary.json`` and the direction.

    python -m mechref.analyses.quickstart --n-train 32 --n-eval 6 --out runs/quickstart

In Python: mechref.quickstart.run_quickstart.
"""

from __future__ import annotations

from typing import Sequence

from mechref.cli import analysis_main
from mechref.quickstart import QuickstartSettings, report_quickstart, run_quickstart
from mechref.settings import ModelSettings


def main(argv: Sequence[str] | None = None) -> int:
    return analysis_main(
        "python -m mechref.analyses.quickstart",
        __doc__,
        QuickstartSettings,
        run_quickstart,
        report_quickstart,
        argv,
        default_out="runs/quickstart",
        model_defaults=ModelSettings(dtype="float32"),
    )


if __name__ == "__main__":
    raise SystemExit(main())
