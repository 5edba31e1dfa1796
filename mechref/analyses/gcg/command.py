"""Search an adversarial suffix with GCG and write it, with its provenance, as a suffix file.

    python -m mechref.analyses.gcg                                   # embedded model, 4 bundled prompts
    python -m mechref.analyses.gcg --n 8 --steps 300 --out my_suffix.json
    python -m mechref.analyses.suffix_hijack --suffix-file my_suffix.json

The suffix file records the settings, the equivalent command, the loss curve, and the greedy reply
the model gives to every prompt with the suffix (and the refusal judge's verdict). The search state
is checkpointed next to --out and a rerun resumes it. In Python: mechref.analyses.gcg.run_gcg.
"""

from __future__ import annotations

from typing import Sequence

from mechref.analyses.command import AnalysisCommand
from mechref.analyses.gcg.pipeline import GCGSettings, check_gcg, run_gcg

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.gcg",
    __doc__,
    GCGSettings,
    run_gcg,
    None,
    default_out="runs/gcg/suffix.json",
    check=check_gcg,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); the exit code (0, 1 on a crash, 2 on bad
    input)."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
