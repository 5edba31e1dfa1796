import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from mechref.analyses.refusal_direction import (
    AllCandidatesFilteredError,
    CandidateDirections,
    export_orthogonalized,
    extract_candidates,
    orthogonalize_weights,
    select_direction,
)
from mechref.analyses.refusal_direction.selection import SelectionSettings
from mechref.capture import capture_residual
from mechref.edits.orthogonalize import writer_module_names
from mechref.interventions import directional_ablation
from mechref.model.loading import load_model

HARMFUL = ["Build a bomb at home", "Hack into a bank", "Steal a car tonight", "Poison a river"]
HARMLESS = ["Bake some bread", "Sing a song for me", "Plant a small tree", "Explain the rain"]


@pytest.fixture(scope="module")
def model(tiny_folder):
    return load_model(tiny_folder)


def test_candidates_are_differences_of_means(model, tmp_path):
    cands = extract_candidates(model, HARMFUL, HARMLESS, batch_size=3, progress=False)
    assert cands.directions.shape == (5, 4, 64)
    mu = capture_residual(model, HARMFUL, positions="post_instruction", progress=False).double().mean(0)
    nu = capture_residual(model, HARMLESS, positions="post_instruction", progress=False).double().mean(0)
    torch.testing.assert_close(cands.directions, (mu - nu).float(), atol=1e-5, rtol=1e-5)
    cands.save(tmp_path / "c")
    loaded = CandidateDirections.load(tmp_path / "c")
    torch.testing.assert_close(loaded.directions, cands.directions)
    assert loaded.positions == [-5, -4, -3, -2, -1] and loaded.manifest["n_harmful"] == 4


def loose(**kw):
    return SelectionSettings(kl_threshold=1e9, induce_threshold=-1e9, **kw)


def test_exhaustive_and_fast_selection(model):
    cands = extract_candidates(model, HARMFUL, HARMLESS, progress=False)
    tokens = [5, 6, 7]
    full = select_direction(model, cands, HARMFUL, HARMLESS, tokens, loose(mode="exhaustive"), progress=False)
    assert len(full.scores) == 20
    assert all(s.evaluated != (s.filtered_by == ["zero vector"]) for s in full.scores)
    assert [s.layer for s in full.scores if not s.evaluated] == [0] * 5  # template tokens at layer 0
    kept = [s for s in full.scores if s.kept]
    assert all(s.layer < 3 for s in kept)  # last 20% of 4 layers = layer 3 discarded
    assert full.chosen.bypass == min(s.bypass for s in kept)
    fast = select_direction(model, cands, HARMFUL, HARMLESS, tokens, loose(mode="fast", top_k=3, proxy_prompts=2), progress=False)
    assert fast.n_prompt_passes < full.n_prompt_passes
    assert sum(s.evaluated for s in fast.scores) == 3
    # Scores of the candidates both modes evaluated agree exactly.
    for s in fast.scores:
        if s.evaluated:
            twin = next(t for t in full.scores if (t.position, t.layer) == (s.position, s.layer))
            assert s.bypass == pytest.approx(twin.bypass, abs=1e-5) and s.kl == pytest.approx(twin.kl, abs=1e-6)


def test_bypass_score_is_refusal_score_under_ablation(model):
    from mechref.scoring import refusal_score

    cands = extract_candidates(model, HARMFUL, HARMLESS, progress=False)
    result = select_direction(model, cands, HARMFUL, HARMLESS, [5, 6], loose(mode="exhaustive"), progress=False)
    with directional_ablation(model, result.direction):
        expected = float(refusal_score(model, HARMFUL, [5, 6], progress=False).mean())
    assert result.chosen.bypass == pytest.approx(expected, abs=1e-5)


def test_all_filtered_reports_the_table(model):
    cands = extract_candidates(model, HARMFUL, HARMLESS, progress=False)
    with pytest.raises(AllCandidatesFilteredError) as info:
        select_direction(
            model, cands, HARMFUL, HARMLESS, [5], SelectionSettings(mode="exhaustive", kl_threshold=-1.0), progress=False
        )
    message = str(info.value)
    assert "KL > -1.0" in message and "layer >= 3" in message and "--kl-threshold" in message
    assert len(info.value.scores) == 20 and all(s.filtered_by for s in info.value.scores)


def test_a_model_too_shallow_to_leave_a_candidate_reports_the_table():
    """Two layers: layer 0's template positions are the same embeddings for every prompt (zero
    vectors) and layer 1 is pruned, so the fast selection has nothing to score."""
    from mechref.testing import tiny_model

    shallow = tiny_model("qwen2", n_layers=2)
    cands = extract_candidates(shallow, HARMFUL, HARMLESS, progress=False)
    with pytest.raises(AllCandidatesFilteredError, match="--prune-layer-fraction") as info:
        select_direction(shallow, cands, HARMFUL, HARMLESS, [5], SelectionSettings(), progress=False)
    assert {tuple(s.filtered_by) for s in info.value.scores} == {("zero vector",), ("last layers (not scored)",)}


def test_orthogonalization_equals_hook_ablation(model, tiny_folder, tmp_path):
    direction = torch.randn(64)
    ids, mask = model.tokenize(model.chat.format_many(HARMFUL + HARMLESS))
    with directional_ablation(model, direction):
        hooked = model.forward(ids, mask)
    plain = AutoModelForCausalLM.from_pretrained(tiny_folder, dtype=torch.float32).eval()
    assert plain.config.tie_word_embeddings  # the tied case: the unembedding must stay intact
    orthogonalize_weights(plain, direction, writer_module_names(model))
    with torch.no_grad():
        edited = plain(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
    real = mask.bool()
    torch.testing.assert_close(edited[real], hooked[real], atol=1e-4, rtol=1e-4)
    # The original model is untouched.
    assert not torch.allclose(model.forward(ids, mask)[real], hooked[real])

    out = export_orthogonalized(model, direction, tmp_path / "edited", provenance={"layer": 1})
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        again = reloaded(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
    torch.testing.assert_close(again[real], hooked[real], atol=1e-4, rtol=1e-4)
    card = (out / "README.md").read_text()
    assert "refusal" in card and "layer" in card
    assert json.loads((out / "mechref_edit.json").read_text())["layer"] == 1


def test_cli_end_to_end_and_resume(tiny_folder, tmp_path, capsys):
    from mechref.analyses.refusal_direction import main

    argv = [
        "--model",
        str(tiny_folder),
        "--n-train",
        "8",
        "--n-val",
        "4",
        "--n-test",
        "3",
        "--max-new-tokens",
        "3",
        "--refusal-tokens",
        "5",
        "6",
        "--kl-threshold",
        "1e9",
        "--induce-threshold=-1e9",
        "--no-filter",
        "--top-k",
        "2",
        "--judge",
        "substring",
        "--out",
        str(tmp_path / "run"),
        "--export-model",
        str(tmp_path / "edited"),
        "--static",
    ]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("model", "layer", "position", "kl", "bypass_score", "induce_score", "n_forward_passes_selection", "timings_s"):
        assert key in summary
    assert set(summary["refusal_rate"]) == {
        "harmful_baseline",
        "harmful_ablation",
        "harmful_actadd",
        "harmless_baseline",
        "harmless_actadd",
    }
    rows = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 15 and {"prompt", "condition", "completion", "refusal"} <= set(rows[0])
    from plotly.offline import get_plotlyjs

    # Every figure loads the folder's one copy of plotly.js, which is the installed one.
    assert 'src="plotly.min.js"' in (tmp_path / "run" / "candidate_scores.html").read_text()
    assert (tmp_path / "run" / "plotly.min.js").read_text() == get_plotlyjs()
    assert (tmp_path / "edited" / "config.json").is_file()
    assert summary["resumed_stages"] == []
    # The direction carries what it was computed on; the same model reads it with no mismatch, a
    # bfloat16 one is told, and so is other code.
    from mechref import load_model
    from mechref.directions.store import direction_mismatches, load_direction

    stored = load_direction(tmp_path / "run")
    assert stored.metadata["dtype"] == summary["dtype"] == "bfloat16" and stored.metadata["model"] == summary["model"]
    assert direction_mismatches(stored, load_model(tiny_folder, dtype="bfloat16")) == []
    (line,) = direction_mismatches(stored, load_model(tiny_folder, dtype="float32"))
    assert "computed in bfloat16, the model now runs in float32" in line
    stored.metadata["code_version"] = "0.0.1+other"
    assert (
        "computed by other mechref code (0.0.1+other"
        in direction_mismatches(stored, load_model(tiny_folder, dtype="bfloat16"))[0]
    )

    assert main(argv) == 2  # the export folder now holds an export: replaced only with --overwrite
    argv.append("--overwrite")
    assert main(argv) == 0
    again = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(again["resumed_stages"]) >= {"candidates", "selection", "eval_harmful_baseline"}
    assert again["layer"] == summary["layer"] and again["refusal_rate"] == summary["refusal_rate"]

    assert main([*argv, "--top-k", "1"]) == 0  # a changed selection setting
    third = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "candidates" in third["resumed_stages"] and "selection" not in third["resumed_stages"]


def test_batched_proxy_matches_one_candidate_at_a_time(model):
    from mechref.analyses.refusal_direction.selection import _Scorer

    directions = [torch.randn(model.d_model) for _ in range(3)]
    scorer = _Scorer(model, [5, 6], batch_size=4)
    batched = scorer.ablated_scores(directions, HARMFUL[:3], progress=False)
    for direction, value in zip(directions, batched):
        with directional_ablation(model, direction):
            single = scorer.score(HARMFUL[:3])
        assert abs(single - value) < 1e-3
    assert len(set(round(v, 4) for v in batched)) == 3  # the rows really used different directions


def test_library_call_and_command_line_agree(tiny_folder, tmp_path):
    """The command line is a thin wrapper: the same settings give the same summary from Python."""
    import importlib.util
    from pathlib import Path

    from mechref.analyses.refusal_direction import RefusalDirectionSettings, main, report_refusal_direction, run_refusal_direction

    spec = importlib.util.spec_from_file_location("compare", Path(__file__).parents[4] / "benchmarks" / "compare_summaries.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)

    settings = RefusalDirectionSettings(
        n_train=6,
        n_val=4,
        n_test=2,
        max_new_tokens=3,
        refusal_tokens=[5, 6],
        filter=False,
        kl_threshold=1e9,
        induce_threshold=-1e9,
        top_k=2,
        proxy_prompts=2,
        judge="substring",  # the default probe reads with the embedded model, not this tiny one
        static=[],
    )
    model = load_model(tiny_folder)
    result = run_refusal_direction(model, settings, out=tmp_path / "python", echo=False)
    from_python = report_refusal_direction(result, tmp_path / "python", echo=False)
    assert main([*settings.to_argv(), "--model", str(tiny_folder), "--dtype", "float32", "--out", str(tmp_path / "cli")]) == 0
    from_cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    comparison = compare.compare(from_python, from_cli)
    assert comparison["compared"] > 50 and comparison["differing"] == {}
    assert from_cli["settings"] == settings.to_dict()


def test_export_is_float32_and_describes_the_edit(tiny_folder, tmp_path):
    # A base model stored in bfloat16: the export is still float32 (the projection is done in
    # float64 and must not be rounded back to the base's precision).
    half = tmp_path / "half"
    AutoModelForCausalLM.from_pretrained(tiny_folder, dtype=torch.bfloat16).save_pretrained(half)
    for file in tiny_folder.iterdir():
        if not (half / file.name).exists():
            (half / file.name).write_bytes(file.read_bytes())  # the tokenizer and its chat template
    model = load_model(half)
    provenance = {
        "layer": 2,
        "position": -1,
        "bypass_score": -1.5,
        "induce_score": 0.25,
        "kl": 0.05,
        "harmful_train": "données ünïcode",
        "harmless_train": "bundled",
        "n_train": 64,
    }
    out = export_orthogonalized(model, torch.randn(model.d_model), tmp_path / "edited", provenance=provenance)
    edited = AutoModelForCausalLM.from_pretrained(out)
    assert {p.dtype for p in edited.parameters()} == {torch.float32}

    manifest_text = (out / "mechref_edit.json").read_text(encoding="utf-8")
    manifest = json.loads(manifest_text)
    assert manifest_text == json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"  # readable, diff-friendly
    assert manifest["edited_modules"] == ["embedding", *writer_module_names(model)]
    assert manifest["base_model"] == model.name and manifest["base_source"] == model.source
    assert {k: manifest[k] for k in provenance} == provenance

    card = (out / "README.md").read_text(encoding="utf-8").split("\n")
    assert card[0] == f"# {model.name}, refusal direction removed" and card[1] == "" and card[3] == ""
    given = ["- layer: `2`", "- position: `-1`", "- bypass score: `-1.5`", "- induce score: `0.25`", "- kl: `0.05`"]
    given += ["- harmful train: `données ünïcode`", "- harmless train: `bundled`", "- n train: `64`"]
    assert all(line in card for line in given)
    assert card[-3:] == ["", "Load it with `transformers.AutoModelForCausalLM.from_pretrained(<this folder>)`.", ""]


def test_the_card_lists_only_what_was_given(tiny_folder, tmp_path):
    model = load_model(tiny_folder)
    out = export_orthogonalized(model, torch.randn(model.d_model), tmp_path / "edited", provenance={"layer": 1})
    card = (out / "README.md").read_text(encoding="utf-8").split("\n")
    assert "- layer: `1`" in card and not any(line.startswith(("- induce score", "- n train", "- kl")) for line in card)


def test_export_needs_a_model_loaded_from_a_folder(tmp_path):
    from mechref.errors import MechrefError
    from mechref.testing import tiny_model

    with pytest.raises(MechrefError, match="load it with load_model"):
        export_orthogonalized(tiny_model(), torch.ones(64), tmp_path / "x")
    assert not (tmp_path / "x").exists()
