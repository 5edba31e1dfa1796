"""The category analysis on the embedded model, three bundled categories, with the reduced refusal direction."""

import json

from .conftest import assert_every_page_works


def test_categories_cli_on_embedded_model(categories_run):
    out = categories_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["categories"]["fraud"] == {"n": 8, "fit": 4, "eval": 4, "members": []}
    # Harm categories share one refusal direction: each category's is far from orthogonal to the global one.
    assert min(summary["cosine"]["with_global"].values()) > 0.4
    share = summary["logit_transfer"]["refusing_share"]
    score = summary["logit_transfer"]["mean_refusal_score"]
    # The global direction, ablated, pushes every held-out prompt's refusal score far down.
    assert score["global"]["all"]["mean"] < score["baseline"]["all"]["mean"] - 3
    assert share["global"]["all"]["k"] <= 1
    # Each category's own direction, ablated, removes refusal of another category's prompts too.
    assert score["cybercrime"]["fraud"]["mean"] < score["baseline"]["fraud"]["mean"] - 2
    # Nested subspaces: the angle to the global direction can only shrink as k grows.
    angles = [row["angle_to_global_deg"] for row in summary["subspace"]["k_ablation"]]
    assert angles[1] <= angles[0] + 1e-6
    replies = summary["generation"]["refusal_rate"]
    assert replies["baseline"]["all"]["k"] >= 4 and replies["global"]["all"]["k"] <= 2
    assert_every_page_works(out)
