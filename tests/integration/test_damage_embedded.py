"""The damage analysis on the embedded model at a small N, with the reduced refusal direction."""

import json
from pathlib import Path

import pytest

from mechref.analyses.damage import main

from .conftest import DTYPE_ARGV, assert_every_page_works

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_damage_cli_on_embedded_model(refusal_run, tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"reference data not found at {SHARED}")
    out = tmp_path / "damage"
    argv = ["--direction", str(refusal_run), "--edits", "ablation", "--xstest", str(SHARED / "xstest" / "xstest_prompts.csv"),
            "--n-xstest", "4", "--gsm8k", str(SHARED / "gsm8k" / "test.jsonl"), "--n-gsm8k", "2", "--gsm8k-max-new-tokens", "24",
            "--n-harmless", "4", "--reference-tokens", "16", "--max-new-tokens", "24", "--out", str(out), "--static"]  # fmt: skip
    assert main([*argv, *DTYPE_ARGV]) == 0
    summary = json.loads((out / "summary.json").read_text())
    kl = summary["kl_ce"]["by_condition"]
    # Ablation moves the distribution on harmless replies, a little: above 0, well below the
    # divergence of an unrelated model (several nats).
    assert 0 < kl["ablation"]["kl_first_tokens"]["mean"] < 2
    assert kl["original"]["kl_first_tokens"]["mean"] == 0
    # The unedited model's own greedy replies are likely under it: low cross-entropy.
    assert kl["original"]["cross_entropy"]["mean"] < 1.5
    safe = summary["over_refusal"]["by_condition"]
    assert safe["original"]["n"] == 4 and safe["ablation"]["k"] <= safe["original"]["k"] + 1
    assert summary["gsm8k"]["by_condition"]["original"]["n"] == 2
    assert_every_page_works(out)
