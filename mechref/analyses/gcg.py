"""Search an adversarial suffix with GCG and write it, with its provenance, as a suffix file.

    python -m mechref.analyses.gcg                                   # embedded model, 4 bundled prompts
    python -m mechref.analyses.gcg --n 8 --steps 300 --out my_suffix.json
    python -m mechref.analyses.suffix_hijack --suffix-file my_suffix.json

The suffix file records the settings, the equivalent command, the loss curve, and the greedy reply
the model gives to every prompt with the suffix (and the refusal judge's verdict). The search state
is checkpointed next to --out and a rerun resumes it. In Python: mechref.attacks.run_suffix_search.
"""

from __future__ import annotations

from typing import Sequence

from mechref.attacks.search import SuffixSearchSettings, check_suffix_search, run_suffix_search
from mechref.cli import AnalysisCommand

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.gcg",
    __doc__,
    SuffixSearchSettings,
    run_suffix_search,
    None,
    default_out="runs/gcg/suffix.json",
    check=check_suffix_search,
)


def main(argv: Sequence[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
