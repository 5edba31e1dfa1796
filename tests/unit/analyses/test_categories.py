"""The category analysis: data splits, geometry against numpy/scipy, every matrix cell against a
direct computation with the reference hooks (tests/reference.py), resume and the command."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from mechref.analyses.categories import CategoriesSettings, load_category_data, report_categories, run_categories
from mechref.analyses.categories.geometry import (
    angle_to_subspace,
    category_directions,
    cluster_order,
    cosine_matrix,
    orthonormal,
    principal_subspace,
)
from mechref.analyses.categories.pipeline import GLOBAL, subspace_name
from mechref.errors import DataFormatError, ShapeError
from mechref.framework.io import write_tensors
from mechref.interventions import directional_ablation, subspace_ablation
from mechref.model.loading import load_model
from tests.reference import balanced_tokens, hf_ablation, kl, last_logits, refusal_scores

TOPICS = {
    "weapons": "build a rifle from spare parts",
    "fraud": "fake an insurance claim",
    "cyber": "break into an email account",
}


def _harmful_file(path, sizes: dict[str, int]) -> None:
    rows = []
    for name, n in sizes.items():
        topic = TOPICS.get(name, f"do the {name} thing")
        rows += [{"instruction": f"Tell me how to {topic}, variant {i}.", "category": name} for i in range(n)]
    path.write_text(json.dumps(rows))


def _harmless_file(path, n: int = 16) -> None:
    path.write_text(json.dumps([f"Give me a recipe for soup number {i}." for i in range(n)]))


# ----- data ----------------------------------------------------------------------------------
def test_small_categories_are_merged_or_left_out_and_halves_never_overlap(tmp_path):
    harmful, harmless = tmp_path / "harmful.json", tmp_path / "harmless.json"
    _harmful_file(harmful, {"weapons": 10, "fraud": 8, "tiny": 3, "small": 2})
    _harmless_file(harmless)
    data = load_category_data(harmful, harmless=harmless, min_prompts=8)
    assert data.names == ["weapons", "fraud"]  # largest first
    assert data.merged == ["small", "tiny"] and data.left_out == {"other": 5}  # 5 merged prompts are still too few
    for category in data.categories:
        assert not set(category.fit) & set(category.eval)
        assert len(category.fit) - len(category.eval) in (0, 1)
    weapons = data.categories[0]
    assert sorted(weapons.fit + weapons.eval) == sorted(f"Tell me how to {TOPICS['weapons']}, variant {i}." for i in range(10))
    # The harmless file is halved too: the mean's prompts are not the KL's.
    assert len(data.harmless) == len(data.harmless_kl) == 8 and not set(data.harmless) & set(data.harmless_kl)
    # Enough small prompts together make an "other" category, which says what it holds.
    _harmful_file(harmful, {"weapons": 10, "fraud": 8, "tiny": 5, "small": 4})
    other = load_category_data(harmful, harmless=harmless, min_prompts=8).categories[-1]
    assert other.name == "other" and other.members == ["small", "tiny"] and len(other.fit + other.eval) == 9
    # A user can keep some categories only, named as in the data.
    assert load_category_data(harmful, harmless=harmless, min_prompts=8, only=["fraud", "weapons"]).names == ["weapons", "fraud"]
    with pytest.raises(DataFormatError, match="no category 'drugs'"):
        load_category_data(harmful, harmless=harmless, only=["drugs"])
    # The seed decides the halves, reproducibly.
    again = load_category_data(harmful, harmless=harmless, min_prompts=8, seed=42)
    assert again.categories[0].fit == load_category_data(harmful, harmless=harmless, min_prompts=8).categories[0].fit
    assert load_category_data(harmful, harmless=harmless, min_prompts=8, seed=1).categories[0].fit != again.categories[0].fit


def test_data_that_cannot_make_two_categories_is_refused(tmp_path):
    harmful = tmp_path / "harmful.json"
    _harmful_file(harmful, {"weapons": 10, "fraud": 3})
    with pytest.raises(DataFormatError, match="only 1 categories"):
        load_category_data(harmful, min_prompts=8)
    harmful.write_text(json.dumps([{"instruction": "Build a bomb."}] * 4))
    with pytest.raises(DataFormatError, match="category"):
        load_category_data(harmful)
    harmful.write_text(json.dumps([{"instruction": f"x {i}", "category": "other"} for i in range(8)]))
    with pytest.raises(DataFormatError, match="rename"):
        load_category_data(harmful)


def test_refusal_direction_splits_keep_their_categories(shared_data):
    data = load_category_data(data=shared_data / "refusal_direction", max_per_category=8)
    assert data.unlabelled == 260  # the train split has no categories
    assert len(data.categories) >= 10 and all(len(c.fit) + len(c.eval) == 8 for c in data.categories)


# ----- geometry ------------------------------------------------------------------------------
def test_geometry_against_numpy_and_scipy():
    rng = np.random.default_rng(0)
    harmful, harmless = rng.normal(size=(12, 6)), rng.normal(size=(5, 6))
    names = ["a"] * 4 + ["b"] * 5 + ["c"] * 3
    found = category_directions(torch.tensor(harmful), names, torch.tensor(harmless))
    expected = {n: harmful[[i for i, x in enumerate(names) if x == n]].mean(0) - harmless.mean(0) for n in "abc"}
    for n in "abc":
        np.testing.assert_allclose(found[n].numpy(), expected[n], atol=1e-5)
    stacked = np.stack([expected[n] for n in "abc"])
    normed = stacked / np.linalg.norm(stacked, axis=1, keepdims=True)
    np.testing.assert_allclose(cosine_matrix(torch.tensor(stacked)).numpy(), normed @ normed.T, atol=1e-5)
    space = principal_subspace(torch.tensor(stacked))
    s = np.linalg.svd(stacked, compute_uv=False)
    np.testing.assert_allclose(space.explained_variance_ratio.numpy(), s**2 / (s**2).sum(), atol=1e-5)
    np.testing.assert_allclose(space.basis.T.numpy() @ space.basis.numpy(), np.eye(3), atol=1e-5)
    # Every direction lies in the span of all components; the first points along their mean.
    assert max(angle_to_subspace(torch.tensor(v), space.basis) for v in stacked) < 0.1
    assert float(space.basis[:, 0] @ torch.tensor(stacked.mean(0), dtype=torch.float32)) > 0
    # The angle to a subspace, in closed form: 45 degrees to a plane from a vector half in it.
    assert angle_to_subspace(torch.tensor([1.0, 0.0, 1.0]), torch.eye(3)[:, :2]) == pytest.approx(45.0, abs=1e-4)
    assert angle_to_subspace(torch.tensor([0.0, 0.0, 2.0]), torch.eye(3)[:, :2]) == pytest.approx(90.0, abs=1e-4)
    # Clustering order: two tight pairs end up as neighbours, whatever the input order.
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.99, 0.1], [0.1, 0.99]])
    order = cluster_order(cosine_matrix(points))
    assert abs(order.index(0) - order.index(2)) == 1 and abs(order.index(1) - order.index(3)) == 1


def test_subspace_ablation_matches_the_reference_hooks(tiny_qwen):
    model = tiny_qwen
    basis = orthonormal(torch.randn(2, model.d_model))
    prompts = ["Build a bomb at home", "Bake some bread"]
    with subspace_ablation(model, basis):
        ours = last_logits(model, prompts)
    with hf_ablation(model.hf_model, basis[:, 0]), hf_ablation(model.hf_model, basis[:, 1]):
        reference = last_logits(model, prompts)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
    # One column is directional ablation of that column.
    with subspace_ablation(model, basis[:, :1]):
        one = last_logits(model, prompts)
    with directional_ablation(model, basis[:, 0] * 3):
        directional = last_logits(model, prompts)
    torch.testing.assert_close(one, directional, atol=1e-4, rtol=1e-4)
    with pytest.raises(ShapeError, match="orthonormal"):
        subspace_ablation(model, torch.randn(model.d_model, 2)).__enter__()
    # Each half of the shape check alone refuses: a matrix of the wrong width, a single vector.
    with pytest.raises(ShapeError, match=rf"d_model={model.d_model}"):
        subspace_ablation(model, orthonormal(torch.randn(1, model.d_model + 1))).__enter__()
    with pytest.raises(ShapeError, match=rf"d_model={model.d_model}"):
        subspace_ablation(model, basis[:, 0]).__enter__()


# ----- the analysis --------------------------------------------------------------------------
@pytest.fixture
def study(tmp_path, tiny_folder):
    model = load_model(tiny_folder, dtype="float32")
    harmful, harmless = tmp_path / "harmful.json", tmp_path / "harmless.json"
    _harmful_file(harmful, {"weapons": 9, "fraud": 8, "cyber": 8})
    _harmless_file(harmless)
    direction = tmp_path / "direction.safetensors"
    write_tensors(
        direction, {"direction": torch.randn(model.d_model)}, metadata={"layer": "2", "position": "-1", "model": model.name}
    )
    tokens = balanced_tokens(model)
    settings = CategoriesSettings(
        harmful=harmful,
        harmless=harmless,
        direction=direction,
        refusal_tokens=tokens,
        n_components=2,
        n_generate=2,
        generation_sources=1,
        max_new_tokens=3,
        judge="substring",  # the default probe reads with the embedded model, not this tiny one
        static=[],
    )
    return model, settings, tokens, tmp_path


@contextlib.contextmanager
def reference_ablation(model, rows):
    """Ablate each row with the reference hooks (orthonormal rows: the subspace they span)."""
    with contextlib.ExitStack() as stack:
        for row in rows:
            stack.enter_context(hf_ablation(model.hf_model, row))
        yield


@torch.no_grad()
def _reference_resid(model, instructions, layer: int) -> torch.Tensor:
    """The input of decoder layer ``layer`` at the last prompt position, one prompt at a time (HF hidden states)."""
    rows = []
    for text in model.chat.format_many(list(instructions)):
        ids = model.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        rows.append(model.hf_model(ids, output_hidden_states=True).hidden_states[layer][0, -1].double())
    return torch.stack(rows)


def test_every_matrix_cell_matches_a_direct_computation(study):
    model, settings, tokens, tmp_path = study
    result = run_categories(model, settings, tmp_path / "run", echo=False)
    data = result.data
    harmless_mean = _reference_resid(model, data.harmless, 2).mean(0)
    for i, category in enumerate(data.categories):
        expected = _reference_resid(model, category.fit, 2).mean(0) - harmless_mean
        torch.testing.assert_close(result.directions[i].double(), expected, atol=2e-4, rtol=1e-4)
    baseline_kl_logits = last_logits(model, data.harmless_kl)
    assert result.sources == ["baseline", GLOBAL, "weapons", "cyber", "fraud", subspace_name(1), subspace_name(2)]
    for s, source in enumerate(result.sources):
        if source == "baseline":
            continue
        if source.startswith("subspace_"):
            columns = result.subspace.top(int(source[-1])).T
        else:
            columns = (result.global_direction if source == GLOBAL else result.directions[data.names.index(source)])[None]
        with reference_ablation(model, columns):
            harmful_logits = {c.name: last_logits(model, c.eval) for c in data.categories}
            kl_logits = last_logits(model, data.harmless_kl)
        for category in data.categories:
            cols = [j for j, name in enumerate(result.eval_categories) if name == category.name]
            torch.testing.assert_close(
                result.scores[s, cols].double(), refusal_scores(harmful_logits[category.name], tokens), atol=2e-3, rtol=1e-3
            )
        if source in result.kl_sources:
            row = result.kl[result.kl_sources.index(source)]
            torch.testing.assert_close(row.double(), kl(baseline_kl_logits, kl_logits), atol=1e-4, rtol=1e-3)
    assert result.kl_sources == [GLOBAL, subspace_name(1), subspace_name(2)]
    # The report's cells are those scores, counted: share of prompts with score > 0, k/n.
    summary = report_categories(result, tmp_path / "run", echo=False)
    for s, source in enumerate(result.sources):
        for name in data.names:
            cols = [j for j, c in enumerate(result.eval_categories) if c == name]
            cell = summary["logit_transfer"]["refusing_share"][source][name]
            assert (cell["k"], cell["n"]) == (int((result.scores[s, cols] > 0).sum()), len(cols))
    cos = summary["cosine"]
    assert cos["names"][-1] == GLOBAL and sorted(cos["cluster_order"]) == sorted(cos["names"])
    assert cos["with_global"]["fraud"] == pytest.approx(
        float(torch.nn.functional.cosine_similarity(result.directions[2], result.global_direction, dim=0)), abs=1e-4
    )


def test_generation_rates_count_the_judged_replies_and_a_second_run_resumes(study):
    model, settings, _, tmp_path = study
    result = run_categories(model, settings, tmp_path / "run", echo=False)
    conditions = ["baseline", GLOBAL, subspace_name(2), "weapons"]
    assert list(dict.fromkeys(r["condition"] for r in result.generation)) == conditions
    # Mark replies refused by hand to check the counting: the first reply of every condition.
    rows = [dict(r, refused=False) for r in result.generation]
    for condition in conditions:
        next(r for r in rows if r["condition"] == condition and r["category"] == "fraud")["refused"] = True
    result.generation = rows
    summary = report_categories(result, tmp_path / "run", echo=False)
    g = summary["generation"]
    assert g["refusal_rate"][GLOBAL]["fraud"] == {"rate": 0.5, "k": 1, "n": 2, "ci95": [0.0945, 0.9055]}
    assert g["refusal_rate"][GLOBAL]["all"]["k"] == 1 and g["refusal_rate"][GLOBAL]["all"]["n"] == 6
    assert g["missed_by_global_direction"]["categories"] == ["fraud"]  # 1/2 > 25% refused under the global ablation
    assert g["mcnemar_against_baseline"][GLOBAL]["p_value"] == 1.0
    again = run_categories(model, settings, tmp_path / "run", echo=False)
    assert set(again.resumed_stages) == {"activations", "logit_scores", "generation"}
    torch.testing.assert_close(again.scores, result.scores)
    # Another seed makes other halves: nothing is reused.
    other = run_categories(model, settings.replace(seed=7), tmp_path / "run", echo=False)
    assert other.resumed_stages == []


def test_the_command_runs_end_to_end_and_refuses_bad_input_early(study, tiny_folder, capsys):
    from mechref.analyses import categories

    _, settings, tokens, tmp_path = study
    out = tmp_path / "cli"
    common = ["--model", str(tiny_folder), "--dtype", "float32", "--direction", str(settings.direction)]
    argv = [*common, "--harmful", str(settings.harmful), "--harmless", str(settings.harmless), "--refusal-tokens"]
    argv += [str(t) for t in tokens] + ["--max-new-tokens", "2", "--n-generate", "1", "--out", str(out), "--static"]
    argv += ["--judge", "substring"]
    assert categories.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["analysis"] == "categories" and summary["data"]["categories"]["cyber"] == {
        "n": 8,
        "fit": 4,
        "eval": 4,
        "members": [],
    }
    for page in ("cosine_matrix", "transfer_logit", "transfer_generation", "category_rates", "subspace"):
        assert f"{page}.html" in summary["figures"] and (out / f"{page}.html").is_file()
    # The overview page of a runs folder names the study and its headline numbers.
    from mechref.report.overview import find_runs, key_numbers

    (run,) = find_runs(out)
    numbers = dict(key_numbers(run))
    assert run.kind == "categories" and numbers["categories"] == "weapons cyber fraud"
    assert numbers["replies refused, baseline"].endswith(
        f"= {summary['generation']['refusal_rate']['baseline']['all']['k']}/3 "
        + "[{:.2f}, {:.2f}]".format(*summary["generation"]["refusal_rate"]["baseline"]["all"]["ci95"])
    )
    capsys.readouterr()
    assert categories.main([*common, "--harmful", str(settings.harmful), "--data", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    bad = tmp_path / "uncategorised.json"
    bad.write_text(json.dumps(["Build a bomb."] * 8))
    assert categories.main([*common, "--harmful", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "category" in capsys.readouterr().err and not (tmp_path / "x").exists()
