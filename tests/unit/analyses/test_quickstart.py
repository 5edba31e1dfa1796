"""The quickstart marks a run whose model does not refuse instead of reporting its rates as measured."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mechref.analyses.quickstart import QuickstartSettings, report_quickstart, run_quickstart
from mechref.analyses.quickstart.pipeline import no_refusal_to_explain
from mechref.errors import NoRefusalWarning
from mechref.rates import Rate


def rates(harmful: int, harmless: int, n: int = 4) -> dict[str, Rate]:
    return {
        "harmful_baseline": Rate.of([True] * harmful + [False] * (n - harmful)),
        "harmless_baseline": Rate.of([True] * harmless + [False] * (n - harmless)),
    }


@pytest.mark.parametrize(
    ("harmful", "harmless", "marked"),
    [
        (0, 0, True),  # refuses nothing
        (1, 1, True),  # the boundary: refusing harmful prompts only as often as harmless ones explains nothing
        (1, 2, True),
        (2, 1, False),  # one more harmful refusal than harmless: a refusal to explain
        (4, 0, False),
    ],
)
def test_marked_exactly_when_harmful_refusal_is_at_or_below_harmless(harmful, harmless, marked):
    message = no_refusal_to_explain(rates(harmful, harmless))
    assert (message is not None) == marked
    if marked:
        # It names the numbers and the ways out.
        assert f"{harmful}/4 harmful" in message and f"{harmless}/4 harmless" in message
        assert "--system-prompt" in message and "--n-eval" in message


def test_a_model_that_refuses_nothing_is_marked_on_screen_in_the_summary_and_on_the_page(tiny_qwen, tmp_path, capsys):
    settings = QuickstartSettings(n_train=2, n_eval=2, max_new_tokens=2)
    # A tiny random model refuses none of the prompts.
    with pytest.warns(NoRefusalWarning, match="no refusal to explain: the model refused 0/2 harmful"):
        result = run_quickstart(tiny_qwen, settings, echo=False)
    summary = report_quickstart(result, tmp_path / "run", echo=True)
    assert "WARNING: no refusal to explain" in capsys.readouterr().out
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["no_refusal_to_explain"] == summary["no_refusal_to_explain"] == result.no_refusal_to_explain
    page = (tmp_path / "run" / "index.html").read_text()
    assert "<strong>No refusal to explain.</strong> the model refused 0/2 harmful prompts" in page

    # The same run, had the model refused one harmful prompt more than harmless ones: nothing marked.
    refusing = dataclasses.replace(result, verdicts={**result.verdicts, "harmful_baseline": [True, False]})
    summary = report_quickstart(refusing, tmp_path / "refusing", echo=True)
    assert summary["no_refusal_to_explain"] is None
    assert "WARNING" not in capsys.readouterr().out
    assert "No refusal to explain" not in (tmp_path / "refusing" / "index.html").read_text()
