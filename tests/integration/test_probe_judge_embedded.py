"""The shipped probe judge, read by the embedded model as analyses load it (float32), on XSTest
rows of a file it was not fitted on, against their human labels."""

from pathlib import Path

import pytest

from mechref.judges.completions import read_completions
from mechref.judges.core import make_judge, verdict_agreement

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_probe_judge_agrees_with_human_labels_on_held_out_rows(qwen):
    path = SHARED / "xstest" / "completions" / "xstest_v2_completions_llama2orig.csv"
    if not path.is_file():
        pytest.skip(f"reference data not found at {path}")
    rows = read_completions(path)
    refusals = [r for r in rows if r["label"]][:24]
    answers = [r for r in rows if not r["label"]][:24]
    sample = refusals + answers
    judge = make_judge("probe", qwen)
    assert judge.reader is qwen  # the analysed model is the probe's reader: no second model loaded
    verdicts = judge.judge_many([r["completion"] for r in sample], [r["prompt"] for r in sample])
    agreement = verdict_agreement(verdicts, [True] * len(refusals) + [False] * len(answers))
    # On the whole file the probe agrees with 0.9+ of the labels; a misread reader or a broken
    # probe falls to chance (0.5) on this balanced sample.
    assert agreement["accuracy"] >= 0.85, agreement
