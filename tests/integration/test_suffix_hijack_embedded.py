"""The suffix-hijacking analysis on the embedded model with the shipped suffix, at a small N."""

import json

from mechref.analyses.suffix_hijack import main

from .conftest import DTYPE_ARGV, assert_every_page_works


def test_suffix_hijack_cli_on_embedded_model(refusal_run, tmp_path):
    out = tmp_path / "hijack"
    argv = ["--direction", str(refusal_run), "--n", "4", "--top-k", "4", "--max-new-tokens", "24", "--out", str(out), "--static"]
    assert main([*argv, *DTYPE_ARGV]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rates = summary["refusal_rate"]
    # The shipped suffix was optimized on these four prompts: the model refuses them alone, not with it.
    assert summary["data"]["n_harmful_the_suffix_was_optimized_on"] == 4
    assert rates["harmful"] >= 0.75 and rates["harmful+adv_suffix"] <= 0.5 and rates["harmless"] <= 0.25
    # The refusal direction is present at the last token of harmful prompts and weaker for harmless
    # ones; the adversarial suffix lowers it more than a random suffix of the same length does.
    late = summary["late_layers"]["mean_cosine"]
    assert late["harmful"] > late["harmless"]
    assert late["harmful+adv_suffix"] < late["harmful+random_suffix"]
    for head in summary["top_heads"]:
        for shares in head["attention_share"].values():
            assert abs(sum(shares.values()) - 1) < 1e-2
        assert head["attention_share"]["harmful"]["suffix"] == 0
    # In bfloat16 too, DFA accounts for the whole projection up to the model's own rounding.
    assert summary["attribution"]["complete"] is True
    assert summary["attribution"]["max_abs_completeness_error"] <= summary["attribution"]["max_allowed_completeness_error"]
    for name in ("index.html", "cosine_by_layer.html", "head_attribution.html", "attention_harmful_adv_suffix.html"):
        assert (out / name).is_file()
    assert_every_page_works(out)
