"""Damage of an edit: what removing or adding the refusal direction breaks.

Against the unedited model, on the same prompts: over-refusal of XSTest's safe prompts, KL and
cross-entropy on the unedited model's own harmless replies, and GSM8K exact match. Edits: the
hook edits of a refusal direction (``--direction``: ablation, actadd) and a weight-edited model
folder (``--edited``, e.g. the refusal-direction analysis's ``--export-model``). The data are read
where they are (``--xstest``, ``--gsm8k``); a measure without its file is skipped and says so.

    python -m mechref.analyses.damage --direction runs/refusal_direction --edited runs/rd_model \\
        --xstest ../shared/data/xstest/xstest_prompts.csv --gsm8k ../shared/data/gsm8k/test.jsonl --out runs/damage

In Python: mechref.analyses.damage.run_damage.
"""

from __future__ import annotations

from typing import Sequence

from mechref.analyses.command import AnalysisCommand
from mechref.analyses.damage import DamageSettings, check_damage, report_damage, run_damage

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.damage",
    __doc__,
    DamageSettings,
    run_damage,
    report_damage,
    default_out="runs/damage",
    check=check_damage,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); the exit code (0, 1 on a crash, 2 on bad
    input)."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
