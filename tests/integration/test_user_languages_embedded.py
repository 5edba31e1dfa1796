"""A language in neither bundled list, from a user's own table, on the embedded model: Vietnamese and
Swahili beside English in one CSV with a column per language (tests/fixtures/user_languages.csv: a
handful of prompts each, written for this test), judged by the mined judge; every part of the
analysis runs and says what it could not validate."""

import json
from pathlib import Path

from .conftest import DTYPE_ARGV, assert_every_page_works

TABLE = Path(__file__).resolve().parents[1] / "fixtures" / "user_languages.csv"


def test_a_users_csv_in_new_languages_runs_end_to_end(refusal_run, tmp_path):
    from mechref.analyses.multilingual import main

    table = TABLE
    out = tmp_path / "run"
    argv = ["--data", str(table), "--n-train", "4", "--n-test", "3", "--judge", "mined", "--n-mine", "4"]
    argv += ["--max-new-tokens", "24", "--direction-run", str(refusal_run), *DTYPE_ARGV, "--out", str(out), "--static"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["languages"] == ["en", "vi", "sw"] and summary["data"]["aligned"] is True
    assert summary["data"]["source"] == f"table:{table}"
    for language in ("en", "vi", "sw"):
        for label in ("harmful", "harmless"):
            counts = summary["baseline_refusal"][language][f"{label}_counts"]
            assert counts["n"] == 3 and 0 <= counts["ci95"][0] <= counts["rate"] <= counts["ci95"][1] <= 1
        assert summary["tokenization"][language]["tokens_per_character"] > 0
    # No hand-labelled check exists for the mined judge on these languages: their rates say so.
    for language in ("vi", "sw"):
        assert summary["judge_validation"][language]["status"] != "validated"
        assert summary["audit_status"][language] == "judge not validated"
    assert set(summary["judge_not_validated"]) >= {"vi", "sw"}
    assert len(summary["cosine"]["matrix"]) == 3 and summary["transfer"]["ablation"]["targets"] == ["en", "vi", "sw"]
    assert_every_page_works(out)


def test_harmful_prompts_only_in_new_languages_run_what_needs_no_harmless_prompts(refusal_run, tmp_path):
    """The same table's harmful rows alone (--harmful-only), as a public jailbreak set comes: the audit and
    the refusal direction's ablation run in every language; cosine and silhouette are named as not run."""
    from mechref.analyses.multilingual import main

    table = tmp_path / "harmful.csv"
    lines = TABLE.read_text(encoding="utf-8").splitlines()
    table.write_text("\n".join(line for line in lines if not line.startswith("harmless")) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    argv = ["--data", str(table), "--harmful-only", "--n-train", "4", "--n-test", "3", "--n-mine", "4"]
    argv += ["--max-new-tokens", "24", "--direction-run", str(refusal_run), *DTYPE_ARGV, "--out", str(out), "--static"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["harmful_only"]["not_run"]) == {"cosine", "silhouette"} and "cosine" not in summary
    generation = summary["transfer"]["generation"]
    for language in ("en", "vi", "sw"):
        assert summary["baseline_refusal"][language]["harmless"] is None
        assert summary["baseline_refusal"][language]["harmful_counts"]["n"] == 3
        assert generation["ablated_refusal_counts"][language]["n"] == 3
    # English refusals are read by its best validated judge, the probe: the direction's ablation must lower them.
    assert summary["judge_by_language"]["en"] == "probe"
    assert generation["ablated_refusal_rate"]["en"] < summary["baseline_refusal"]["en"]["harmful"]
    assert_every_page_works(out)
