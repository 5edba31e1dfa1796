"""The category analysis on the embedded model, three bundled categories, with the reduced refusal direction."""

import json

from mechref.analyses.categories import main

from .conftest import assert_every_page_works

CATEGORIES = ("cybercrime", "weapons", "fraud")


def test_categories_cli_on_embedded_model(refusal_run, tmp_path):
    out = tmp_path / "categories"
    argv = ["--categories", *CATEGORIES, "--direction", str(refusal_run), "--max-per-category", "8", "--n-harmless", "32",
            "--n-kl", "8", "--n-components", "2", "--n-generate", "2", "--generation-sources", "0",
            "--max-new-tokens", "16", "--out", str(out), "--static"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["categories"]["fraud"] == {"n": 8, "fit": 4, "eval": 4, "members": []}
    # Harm categories share one refusal direction: each category's is far from orthogonal to the global one.
    assert min(summary["cosine"]["with_global"].values()) > 0.4
    share = summary["logit_transfer"]["refusing_share"]
    assert share["baseline"]["all"]["k"] >= 9  # of 12 held-out prompts, the unedited model leans to refusing
    assert share["global"]["all"]["k"] <= share["baseline"]["all"]["k"] - 6
    # Each category's own direction, ablated, removes refusal of another category's prompts too.
    assert share["cybercrime"]["fraud"]["k"] < share["baseline"]["fraud"]["k"]
    # Nested subspaces: the angle to the global direction can only shrink as k grows.
    angles = [row["angle_to_global_deg"] for row in summary["subspace"]["k_ablation"]]
    assert angles[1] <= angles[0] + 1e-6
    replies = summary["generation"]["refusal_rate"]
    assert replies["baseline"]["all"]["k"] >= 4 and replies["global"]["all"]["k"] <= 2
    assert_every_page_works(out)
