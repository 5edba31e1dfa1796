"""The refusal-direction analysis end to end on the embedded model, at a reduced setting."""

import json

from mechref.analyses.refusal_direction import main

from .conftest import REDUCED_REFUSAL_ARGV, assert_every_page_works


def test_refusal_direction_cli_on_embedded_model(refusal_run):
    summary = json.loads((refusal_run / "summary.json").read_text())
    rates = summary["refusal_rate"]
    assert summary["kl"] <= 0.1 and summary["induce_score"] > 0
    assert summary["layer"] < int(0.8 * 28)
    # The model refuses harmful prompts and answers harmless ones; ablation and addition reverse both.
    assert rates["harmful_baseline"] >= 0.75
    assert rates["harmless_baseline"] <= 0.25
    assert rates["harmful_ablation"] <= 0.25
    assert rates["harmless_actadd"] >= 0.5
    assert summary["n_prompt_passes_selection"] > 0
    # A second run with the same settings resumes every stage.
    assert main([*REDUCED_REFUSAL_ARGV, "--out", str(refusal_run)]) == 0
    again = json.loads((refusal_run / "summary.json").read_text())
    assert {"candidates", "selection", "eval_harmful_ablation"} <= set(again["resumed_stages"])
    assert again["refusal_rate"] == rates
    assert_every_page_works(refusal_run)
