"""Refusal direction analysis (Arditi et al. 2024), end to end.

Finds the refusal direction of a chat model (difference-in-means candidates over post-instruction
positions and layers, selected by bypass / induce / KL scores), shows it is necessary (ablating
it removes refusal) and sufficient (adding it induces refusal), removes it from the weights and
optionally saves the edited model, and draws the figures.

    python -m mechref.analyses.refusal_direction                       # embedded model, bundled prompts
    python -m mechref.analyses.refusal_direction --splits ../shared/data/refusal_direction/splits \\
        --n-test 100 --out runs/refusal_direction --export-model runs/qwen-no-refusal
    python -m mechref.analyses.refusal_direction --config analyses/paper_settings.toml

Re-running with the same settings resumes from the artifacts in --out; changed settings recompute
the stages they affect. In Python: mechref.analyses.refusal_direction.run_refusal_direction.
"""

from __future__ import annotations

from typing import Sequence

from mechref.analyses.command import AnalysisCommand
from mechref.analyses.refusal_direction import RefusalDirectionSettings, report_refusal_direction, run_refusal_direction
from mechref.analyses.refusal_direction.pipeline import check_refusal_direction

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.refusal_direction",
    __doc__,
    RefusalDirectionSettings,
    run_refusal_direction,
    report_refusal_direction,
    default_out="runs/refusal_direction",
    check=check_refusal_direction,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); the exit code (0, 1 on a crash, 2 on bad
    input)."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
