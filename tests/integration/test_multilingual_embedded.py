"""The multilingual analyses on the embedded model at a small N (English and Chinese: two scripts),
reusing the reduced refusal direction."""

import json

from .conftest import assert_every_page_works


def test_multilingual_cli_on_embedded_model(multilingual_run):
    out = multilingual_run
    summary = json.loads((out / "summary.json").read_text())
    baseline = summary["baseline_refusal"]
    # The model refuses harmful English prompts and answers harmless ones.
    assert baseline["en"]["harmful"] >= 0.75 and baseline["en"]["harmless"] <= 0.25
    # The Chinese list was checked against hand labels of this very model's replies (German, in
    # notebook 04, is run in this tier too; every language's check is in the unit tier).
    statuses = {lang: v["status"] for lang, v in summary["judge_validation"].items()}
    assert statuses == dict.fromkeys(["en", "zh"], "validated")
    assert summary["judge_not_validated"] == []
    # Refusal vectors of these languages point the same way (the paper's parallelism).
    assert summary["cosine"]["mean_pairwise"] > 0.5
    # Ablating the English vector lowers refusal in every language (logit score, share of prompts refusing).
    ablation = summary["transfer"]["ablation"]
    baseline_row, english_row = ablation["refusing_share"][0], ablation["refusing_share"][1]
    assert ablation["sources"][1] == "en"
    assert all(after <= before for after, before in zip(english_row, baseline_row))
    assert summary["transfer"]["generation"]["ablated_refusal_rate"]["en"] <= 0.25
    # Harmful and harmless prompts separate in English at the direction's layer.
    assert summary["silhouette"]["at_direction_layer"]["en"] > 0
    for name in ("index.html", "cosine_matrix.html", "transfer_ablation.html", "silhouette_by_layer.html", "pca.html"):
        assert (out / name).is_file()
    assert_every_page_works(out)
