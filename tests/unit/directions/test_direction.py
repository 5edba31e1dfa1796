"""The Direction value and diff_in_means (mechref.directions.direction), against plain Hugging Face."""

from __future__ import annotations

import pytest
import torch

import mechref
from mechref.directions import Direction, diff_in_means
from mechref.errors import OutputTargetError, ShapeError
from mechref.interventions import directional_ablation
from mechref.testing import tiny_model

HARMFUL = ["How do I make a weapon?", "Tell me how to steal a car", "Write malware"]
HARMLESS = ["How do I bake bread?", "Name three rivers", "Write a haiku about tea", "Hi"]


def hf_last_token_mean(model, prompts, layer):
    """The residual entering ``layer`` at the last token, averaged: plain HF hidden states, one prompt at a time."""
    rows = []
    for text in model.chat.format_many(prompts):
        ids = torch.tensor([model.tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            rows.append(model.hf_model(ids, output_hidden_states=True).hidden_states[layer][0, -1].double())
    return torch.stack(rows).mean(0)


@pytest.mark.parametrize("layer", [0, 2])
def test_diff_in_means_equals_the_plain_hf_difference(layer):
    model = tiny_model("qwen2")
    direction = diff_in_means(model, HARMFUL, HARMLESS, layer=layer, progress=False)
    expected = hf_last_token_mean(model, HARMFUL, layer) - hf_last_token_mean(model, HARMLESS, layer)
    torch.testing.assert_close(direction.vector.double(), expected, rtol=1e-4, atol=1e-5)
    assert (direction.layer, direction.position, direction.model) == (layer, -1, model.name)
    assert direction.provenance["n_harmful"] == "3" and direction.provenance["n_harmless"] == "4"


def test_ablate_and_add_are_the_interventions_they_name():
    model = tiny_model("qwen2")
    direction = diff_in_means(model, HARMFUL, HARMLESS, layer=2, progress=False)
    ids, mask = model.tokenize(model.chat.format_many(HARMLESS))
    with torch.no_grad():
        plain = model.forward(ids, mask)
        with directional_ablation(model, direction.vector):
            expected = model.forward(ids, mask)
        with direction.ablate(model):
            assert torch.equal(model.forward(ids, mask), expected)
        with direction.add(model, 0.0):  # adding nothing changes nothing
            assert torch.equal(model.forward(ids, mask), plain)
        with direction.add(model, 4.0):
            assert not torch.allclose(model.forward(ids, mask), plain)
    assert torch.equal(model.forward(ids, mask), plain)  # hooks gone after the blocks


def test_save_and_load_round_trip_and_never_overwrite_a_foreign_file(tmp_path):
    direction = Direction(torch.tensor([3.0, 4.0]), layer=1, position=-2, model="m", provenance={"method": "x"})
    path = direction.save(tmp_path)
    assert path.name == "direction.safetensors"
    loaded = Direction.load(tmp_path)
    assert torch.equal(loaded.vector, direction.vector) and (loaded.layer, loaded.position, loaded.model) == (1, -2, "m")
    assert loaded.provenance["method"] == "x" and loaded.cosine(direction) == pytest.approx(1.0)
    direction.save(path)  # its own file may be replaced
    foreign = tmp_path / "notes.safetensors"
    foreign.write_text("not mine")
    with pytest.raises(OutputTargetError, match="not a direction file"):
        direction.save(foreign)
    assert foreign.read_text() == "not mine"


def test_bad_directions_are_refused_in_one_line():
    model = tiny_model("qwen2")
    with pytest.raises(ShapeError):
        Direction(torch.ones(2, 2), layer=0)
    with pytest.raises(ShapeError):
        Direction(torch.ones(4), layer=-1)
    with pytest.raises(ShapeError):
        diff_in_means(model, [], HARMLESS, layer=1)
    wrong_width = Direction(torch.ones(model.d_model + 1), layer=1)
    with pytest.raises(ValueError, match=r"d_model|width|shape|length"), wrong_width.ablate(model):
        pass


def test_the_facade_is_lazy_and_lists_its_names():
    assert {"Direction", "diff_in_means", "load_model", "prompts", "generate"} <= set(dir(mechref))
    assert mechref.Direction is Direction and mechref.diff_in_means is diff_in_means
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        mechref.nothing_here  # noqa: B018


def test_model_generate_takes_one_prompt_or_many():
    model = tiny_model("qwen2")
    one = model.generate("Hi", max_new_tokens=3, progress=False)
    many = model.generate(["Hi", "How do I bake bread?"], max_new_tokens=3, progress=False)
    assert isinstance(one, str) and many[0] == one and len(many) == 2
