"""The edit search on a tiny model: the reference trial is today's edit, every trial's proxies
equal a recomputation through the weight edit (a second implementation), the study resumes and
continues, the confirmed points carry rates and the export writes the chosen edit."""

from __future__ import annotations

import json

import pytest
import torch

from mechref.data import bundled
from mechref.model.loading import load_model
from mechref.scoring import kl_divergence, refusal_score_from_logits
from mechref.testing import tiny_direction_run, tiny_model_folder

optuna = pytest.importorskip("optuna")


@pytest.fixture()
def setup(tmp_path):
    folder = tiny_model_folder(tmp_path / "tiny", "qwen2", n_layers=4)
    model = load_model(str(folder), device="cpu")
    return model, tiny_direction_run(model, tmp_path / "direction_run"), folder


def _proxies_by_weight_edit(folder, model, trial, prompts_harmful, prompts_harmless, candidates_dir):
    """A trial's proxies recomputed without hooks: the weight edit on a plain transformers model."""
    from transformers import AutoModelForCausalLM

    from mechref.analyses.optimize_edit.space import point_from_params
    from mechref.directions.candidates import CandidateDirections
    from mechref.edits.orthogonalize import orthogonalize_weights, writer_module_names

    candidates = CandidateDirections.load(candidates_dir)
    point = point_from_params(trial["params"])
    direction = point.direction(candidates.directions, candidates.positions.index(-1))
    plain = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    edited = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    orthogonalize_weights(edited, direction, writer_module_names(model, edited), strengths=point.strengths(model.n_layers))

    def last_logits(hf, prompts):
        rows = []
        for text in model.chat.format_many(prompts):  # one prompt at a time: no padding at all
            ids = model.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                rows.append(hf(ids).logits[0, -1])
        return torch.stack(rows)

    score = refusal_score_from_logits(last_logits(edited, prompts_harmful), [5, 9]).mean()
    kl = kl_divergence(last_logits(plain, prompts_harmless), last_logits(edited, prompts_harmless)).mean()
    return float(score), float(kl)


def test_search_confirms_resumes_and_exports(tmp_path, setup):
    from mechref.analyses.optimize_edit import OptimizeEditSettings, report_optimize_edit, run_optimize_edit

    model, run_dir, folder = setup
    settings = OptimizeEditSettings(
        direction_run=run_dir, n_search=4, n_confirm=3, n_trials=5, max_new_tokens=3, n_confirm_points=2,
        export_model=tmp_path / "chosen", static=[],
    )  # fmt: skip
    out = tmp_path / "search"
    result = run_optimize_edit(model, settings, out, echo=False)
    assert len(result.trials) == 5
    reference = result.trials[0]
    assert reference["params"]["direction_layer"] == 2.0
    assert reference["point"]["attention"]["min_weight"] == reference["point"]["attention"]["max_weight"] == 1.0
    harmful, harmless = bundled("harmful", "val").take(4).instructions, bundled("harmless", "val").take(4).instructions
    for trial in (reference, result.trials[3]):
        score, kl = _proxies_by_weight_edit(folder, model, trial, harmful, harmless, run_dir / "candidates")
        assert trial["refusal_score"] == pytest.approx(score, abs=2e-3), trial["number"]
        assert trial["kl"] == pytest.approx(kl, abs=2e-4, rel=1e-3), trial["number"]
    assert len({json.dumps(t["params"], sort_keys=True) for t in result.trials}) == 5  # the sampler really varies the edit
    labels = [row["label"] for row in result.confirmed]
    assert labels[:2] == ["unedited", "reference (today's edit)"] and len(labels) == 4
    summary = report_optimize_edit(result, out, echo=False)
    chosen = [b for label, b in summary["confirmed"].items() if label not in ("unedited", "reference (today's edit)")]
    assert all({"dominates_reference", "matches_reference", "paired_vs_reference"} <= set(b) for b in chosen)
    assert (tmp_path / "chosen" / "config.json").is_file()
    edit = json.loads((tmp_path / "chosen" / "mechref_edit.json").read_text())
    assert edit["search_trial"] == summary["confirmed"][labels[2]]["trial"]
    # Same settings: the study is complete and the confirmation is resumed.
    again = run_optimize_edit(model, OptimizeEditSettings(**{**settings.to_dict(), "overwrite": True}), out, echo=False)
    assert [t["params"] for t in again.trials] == [t["params"] for t in result.trials] and "confirm" in again.resumed_stages
    # More trials: the old ones are kept and the search continues.
    more = run_optimize_edit(
        model, OptimizeEditSettings(**{**settings.to_dict(), "n_trials": 7, "overwrite": True}), out, echo=False
    )
    assert len(more.trials) == 7 and [t["params"] for t in more.trials[:5]] == [t["params"] for t in result.trials]


def test_bad_search_settings_fail_before_the_model_loads(tmp_path, capsys):
    from mechref.analyses.optimize_edit import main

    for args, message in [
        (["--layer-low", "0.9", "--layer-high", "0.3"], "must be below"),
        (["--splits", str(tmp_path / "nowhere")], "harmful_train.json"),
        (["--n-trials", "1"], "at least 2"),
    ]:
        assert main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mechref: error:") and message in err[0], (args, err)
    assert not (tmp_path / "out").exists()
