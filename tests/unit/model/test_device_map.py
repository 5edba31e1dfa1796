"""Models spread over devices by an accelerate device map, and quantized loading.

On a CPU-only machine the split that can be made is CPU + disk: a tight ``max_memory`` makes
``device_map="auto"`` offload layers to disk, so they are loaded on the fly by accelerate's hooks.
Every result that reads activations must equal the single-device model's; whatever reads the
weights themselves (DFA, exports) must refuse loudly instead of reading empty ``meta`` tensors.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mechref.capture import capture_residual
from mechref.errors import MechrefError, UnsupportedModelError
from mechref.generation import generate
from mechref.interventions import activation_addition, directional_ablation
from mechref.model.loading import check_loading, load_model
from mechref.testing import tiny_model_folder

PROMPTS = ["Write a poem about the sea.", "How do I make a dangerous weapon at home?", "Hi"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2", n_layers=4)


@pytest.fixture(scope="module")
def single(folder):
    return load_model(str(folder), device="cpu")


@pytest.fixture(scope="module")
def spread(folder, tmp_path_factory):
    import os

    os.environ.setdefault("MECHREF_CACHE", str(tmp_path_factory.mktemp("cache")))
    # Room for the embedding and two of the four layers: the rest goes to disk.
    return load_model(str(folder), device_map="auto", max_memory={"cpu": "600KB"})


def test_the_map_really_offloads_layers(spread):
    placed = set(spread.hf_model.hf_device_map.values())
    assert "disk" in placed and ("cpu" in placed or 0 in placed), spread.hf_model.hf_device_map
    assert any(p.device.type == "meta" for p in spread.hf_model.parameters())
    assert spread.device == torch.device("cpu")


def test_logits_and_residual_stream_equal_the_single_device_model(single, spread):
    ids, mask = single.tokenize(single.chat.format_many(PROMPTS))
    assert torch.equal(single.forward(ids, mask), spread.forward(ids, mask))
    layers = list(range(single.n_layers))
    expected = capture_residual(single, PROMPTS, layers=layers, positions="post_instruction", progress=False)
    got = capture_residual(spread, PROMPTS, layers=layers, positions="post_instruction", progress=False)
    assert torch.equal(expected, got)


def test_interventions_and_generation_equal_the_single_device_model(single, spread):
    direction = torch.randn(single.d_model, generator=torch.Generator().manual_seed(0))

    def replies(model, intervention):
        with intervention(model):
            return generate(model, PROMPTS, max_new_tokens=8)

    def ablate(model):
        return directional_ablation(model, direction)

    def add(model):
        return activation_addition(model, direction, layer=2, coefficient=3.0)  # layer 2 is on disk

    assert replies(single, ablate) == replies(spread, ablate)
    assert replies(single, add) == replies(spread, add)
    assert replies(single, add) != replies(single, ablate)  # the interventions do change the replies


def test_what_reads_offloaded_weights_refuses(spread, tmp_path):
    from mechref.attribution import direct_feature_attribution
    from mechref.edits.orthogonalize import export_orthogonalized

    direction = torch.randn(spread.d_model)
    with pytest.raises(UnsupportedModelError, match="offloaded to disk"):
        direct_feature_attribution(spread, PROMPTS, direction, layer=2, progress=False)
    with pytest.raises(UnsupportedModelError, match="offloaded to disk"):
        export_orthogonalized(spread, direction, tmp_path / "edited")
    assert not (tmp_path / "edited").exists()


def _without(monkeypatch, package):
    """As if ``package`` were not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == package else real(name, *a, **k))


def test_loading_options_that_cannot_work_fail_before_loading(monkeypatch):
    with pytest.raises(ValueError, match="only applies with a device map"):
        check_loading(max_memory={"cpu": "1GiB"})
    with pytest.raises(ValueError, match="not both"):
        check_loading(device="cpu", device_map="auto")
    with pytest.raises(ValueError, match="unknown quantization"):
        check_loading(quantize="3bit")  # type: ignore[arg-type]
    _without(monkeypatch, "bitsandbytes")
    with pytest.raises(MechrefError, match=r"mechref\[quantize\]"):
        check_loading(quantize="8bit")
    _without(monkeypatch, "accelerate")
    with pytest.raises(MechrefError, match=r"mechref\[multi-gpu\]"):
        check_loading(device_map="auto")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quantize", "4bit"], "bitsandbytes"),
        (["--max-memory", "0=10GiB"], "only applies with a device map"),
        (["--device-map", "auto", "--max-memory", "gpu0:10GiB"], "DEVICE=SIZE"),
        (["--device-map", "everywhere"], "unknown device map"),
        (["--device", "cpu", "--device-map", "auto"], "not both"),
    ],
)
def test_the_command_line_refuses_bad_loading_options_in_one_line(args, message, capsys, monkeypatch):
    from mechref.analyses.refusal_direction import main

    _without(monkeypatch, "bitsandbytes")
    assert main([*args, "--out", "unused-never-written"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mechref: error:") and message in err[0], err


def test_an_8bit_model_runs_close_to_the_float_one_and_refuses_weight_readers(folder, single, tmp_path):
    pytest.importorskip("bitsandbytes")
    from mechref.attribution import direct_feature_attribution
    from mechref.edits.orthogonalize import export_orthogonalized

    quantized = load_model(str(folder), quantize="8bit", device="cpu")
    assert quantized.quantized and not single.quantized
    ids, mask = single.tokenize(single.chat.format_many(PROMPTS))
    full, eight = single.forward(ids, mask), quantized.forward(ids, mask)
    real = mask.bool()
    # 8-bit weights: close to the float model, not equal to it.
    assert 0 < (full[real] - eight[real]).abs().max() < 0.1 * full[real].abs().max()
    direction = torch.randn(single.d_model)
    with pytest.raises(UnsupportedModelError, match="loaded quantized"):
        direct_feature_attribution(quantized, PROMPTS, direction, layer=2, progress=False)
    with pytest.raises(UnsupportedModelError, match="loaded quantized"):
        export_orthogonalized(quantized, direction, tmp_path / "edited")
    with directional_ablation(quantized, direction):  # hook analyses run
        assert len(generate(quantized, PROMPTS, max_new_tokens=3)) == len(PROMPTS)
