"""The memory check before loading: the weights' size from the folder, and the boundaries of the stop."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mechref.errors import SettingsError
from mechref.model.need import GIB, RUNTIME, Need, check_need, command_need, fit_batches, weight_bytes
from mechref.testing import tiny_hf_model, tiny_model_folder


def test_the_weights_size_is_the_models_parameters_in_the_dtype(tmp_path):
    folder = tiny_model_folder(tmp_path / "m", "llama")
    model = tiny_hf_model("llama", vocab_size=_vocab(folder))
    n = sum(p.numel() for p in model.parameters())
    assert weight_bytes(folder, torch.float32) == 4 * n
    assert weight_bytes(folder, torch.bfloat16) == 2 * n
    assert weight_bytes(tmp_path, torch.float32) is None  # no safetensors: no estimate


def _vocab(folder):
    import json

    return json.loads((folder / "config.json").read_text())["vocab_size"]


def test_the_largest_batch_setting_is_the_one_named(tmp_path):
    folder = tiny_model_folder(tmp_path / "m", "qwen2")
    need = command_need(folder, torch.bfloat16, SimpleNamespace(batch_size=32, generation_batch_size=128))
    assert need is not None and need.rows == 128 and need.setting == "generation_batch_size"
    assert need.weights == weight_bytes(folder, torch.bfloat16) + RUNTIME
    assert command_need(folder, torch.bfloat16, SimpleNamespace(batch_size=8)).setting == "batch_size"  # type: ignore[union-attr]


@pytest.mark.parametrize("spare", [-1, 0, 1])
def test_the_model_alone_stops_only_above_what_is_available(spare):
    need = Need(weights=4 * GIB, batch=0, rows=1, setting="batch_size")
    available = 4 * GIB + spare
    if spare < 0:
        with pytest.raises(SettingsError, match="--dtype bfloat16"):
            check_need(need, available, "float32")
    else:
        check_need(need, available, "float32")


@pytest.mark.parametrize("spare", [-1, 0, 1])
def test_a_batch_stops_only_above_what_is_available_and_names_rows_that_fit(spare):
    need = Need(weights=3 * GIB, batch=1 * GIB, rows=64, setting="generation_batch_size")
    available = 4 * GIB + spare
    if spare < 0:
        with pytest.raises(SettingsError, match="--generation-batch-size 63 "):
            check_need(need, available, "bfloat16")
    else:
        check_need(need, available, "bfloat16")


@pytest.mark.parametrize("spare", [-1, 0, 1])
def test_batch_sizes_nobody_chose_are_lowered_only_above_what_is_available(spare):
    """64 rows of 1/64 GiB beside 3 GiB: with 4 GiB available all fit (unchanged, no note); one byte less and
    63 rows fit, so both sizes above 63 become 63 and the check then passes; a size below stays."""
    need = Need(weights=3 * GIB, batch=1 * GIB, rows=64, setting="generation_batch_size")
    settings = SimpleNamespace(generation_batch_size=64, batch_size=64, other=1)
    fitted, notes = fit_batches(need, 4 * GIB + spare, settings, set())
    if spare >= 0:
        assert fitted is settings and notes == []
        return
    assert (fitted.generation_batch_size, fitted.batch_size, fitted.other) == (63, 63, 1)
    assert len(notes) == 2 and "--generation-batch-size" in notes[0] and "64 -> 63" in notes[0]
    check_need(Need(weights=3 * GIB, batch=63 * GIB / 64, rows=63, setting="generation_batch_size"), 4 * GIB - 1, "bf16")
    small = SimpleNamespace(generation_batch_size=64, batch_size=8)
    assert fit_batches(need, 4 * GIB - 1, small, set())[0].batch_size == 8


def test_a_batch_size_the_user_chose_is_never_lowered_and_still_stops():
    need = Need(weights=3 * GIB, batch=1 * GIB, rows=64, setting="generation_batch_size")
    settings = SimpleNamespace(generation_batch_size=64, batch_size=64)
    assert fit_batches(need, 4 * GIB - 1, settings, {"generation_batch_size"}) == (settings, [])
    with pytest.raises(SettingsError, match="--generation-batch-size 63 "):
        check_need(need, 4 * GIB - 1, "bfloat16")
    weights_too_big = Need(weights=5 * GIB, batch=1 * GIB, rows=64, setting="batch_size")
    assert fit_batches(weights_too_big, 4 * GIB, settings, set()) == (settings, [])  # lowering cannot help


def test_a_command_lowers_an_unchosen_batch_to_fit_and_says_so(tmp_path, monkeypatch, capsys):
    """Memory for the model and a few rows: the quickstart runs with a lowered batch, says so first, and
    a batch size given on the command line stops instead."""
    import mechref.model.need as need
    from mechref.analyses.quickstart.command import main

    folder = tiny_model_folder(tmp_path / "m", "qwen2")
    full = command_need(folder, torch.float32, SimpleNamespace(batch_size=16))
    assert full is not None
    per_row = full.batch / full.rows
    monkeypatch.setattr(need, "available_bytes", lambda: int(full.weights + 4.5 * per_row))
    assert main(["--model", str(folder), "--n-eval", "2", "--max-new-tokens", "4", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "batch_size 16 -> 4: what fits" in out and out.index("-> 4: what fits") < out.index("loading model")
    assert main(["--model", str(folder), "--batch-size", "16", "--out", str(tmp_path / "b")]) == 2
    assert "--batch-size 4 (or fewer)" in capsys.readouterr().err


def test_no_estimate_never_stops():
    check_need(Need(weights=10**15, batch=0, rows=1, setting="batch_size"), None, "float32")


def test_a_command_that_will_not_fit_stops_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import mechref.model.loading as loading
    import mechref.model.need as need
    from mechref.analyses.quickstart.command import main

    folder = tiny_model_folder(tmp_path / "m", "qwen2")
    monkeypatch.setattr(need, "available_bytes", lambda: 1000)
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    assert main(["--model", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "mechref: error: the model needs about" in err and "--quantize" in err


def test_an_edited_model_compared_beside_the_base_adds_its_edited_tensors(tmp_path):
    """damage loads the exported model beside the base: its own tensors are the edited ones (the
    embedding, every attention output and MLP down projection), counted from the model's parameters."""
    from mechref.model.need import beside_bytes

    base = tiny_model_folder(tmp_path / "base", "llama")
    edited = tiny_model_folder(tmp_path / "edited", "llama", seed=1)
    model = tiny_hf_model("llama", vocab_size=_vocab(edited))
    own = sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.endswith(("embed_tokens.weight", "o_proj.weight", "down_proj.weight"))
    )
    assert own and beside_bytes(SimpleNamespace(edited=str(edited)), torch.bfloat16) == 2 * own
    need = command_need(base, torch.bfloat16, SimpleNamespace(batch_size=8, edited=str(edited)))
    assert need is not None and need.weights == weight_bytes(base, torch.bfloat16) + RUNTIME + 2 * own
    assert beside_bytes(SimpleNamespace(edited=None), torch.bfloat16) == 0
    assert beside_bytes(SimpleNamespace(), torch.bfloat16) == 0


def test_an_edited_model_with_unknown_names_counts_whole(tmp_path):
    from safetensors.torch import load_file, save_file

    from mechref.model.need import beside_bytes

    edited = tiny_model_folder(tmp_path / "edited", "llama")
    tensors = load_file(str(edited / "model.safetensors"))
    save_file({f"x.{i}": t for i, t in enumerate(tensors.values())}, str(edited / "model.safetensors"))
    assert beside_bytes(SimpleNamespace(edited=str(edited)), torch.float32) == weight_bytes(edited, torch.float32)
