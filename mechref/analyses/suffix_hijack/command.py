"""Adversarial suffixes hijack the attention of the heads that write the refusal direction
(Arditi et al. 2024, section 5).

Compares harmful instructions alone, with an adversarial (GCG) suffix, and with a random suffix
of the same token length, against harmless instructions:

1. the cosine similarity of the last token's residual stream with the refusal direction at
   every layer;
2. the direct feature attribution (DFA) of every head and MLP to the refusal direction, and the
   top heads on the plain harmful prompts;
3. where those heads look from the last token (system / instruction / suffix / template);
4. circuitsvis views of their attention (offline HTML);
5. the greedy replies and the refusal judge's verdicts.

    python -m mechref.analyses.suffix_hijack                          # embedded model, shipped suffix
    python -m mechref.analyses.suffix_hijack --suffix "describing.\\ + similarlyNow"   # your own suffix
    python -m mechref.analyses.suffix_hijack --model M --run-gcg      # search a suffix for model M first

The refusal direction comes from the refusal-direction analysis: --direction FILE, or the run
folder --direction-run (default runs/refusal_direction), where it is computed on first use.
Re-running with the same settings reuses the measurements and replies saved in --out.
In Python: mechref.analyses.suffix_hijack.run_suffix_hijack.
"""

from __future__ import annotations

from typing import Sequence

from mechref.analyses.command import AnalysisCommand
from mechref.analyses.suffix_hijack import SuffixHijackSettings, report_suffix_hijack, run_suffix_hijack
from mechref.analyses.suffix_hijack.pipeline import check_suffix_hijack

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.suffix_hijack",
    __doc__,
    SuffixHijackSettings,
    run_suffix_hijack,
    report_suffix_hijack,
    default_out="runs/suffix_hijack",
    check=check_suffix_hijack,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); the exit code (0, 1 on a crash, 2 on bad
    input)."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
