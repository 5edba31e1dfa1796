"""An export run as its base model with the edited tensors swapped in is the export loaded alone
(logits and greedy replies, byte for byte); the base is itself again after the block; only the
edited tensors are swapped; a folder the swap cannot be is refused (None), never half-applied; a
memory-mapped tensor's pages leave resident memory only where they were never written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mechref import load_model
from mechref.edits.orthogonalize import export_orthogonalized
from mechref.edits.strengths import EditStrengths, LayerKernel
from mechref.errors import MechrefError
from mechref.framework.memory import drop_file_pages
from mechref.model.swap import WeightSwap
from mechref.model.tensors import FolderTensors
from mechref.testing import tiny_model_folder

IDS = torch.tensor([[3, 17, 42, 99, 5, 250, 7, 61]])
FAMILIES = ("qwen2", "llama", "qwen3", "mistral")


def _export(tmp_path, family="qwen2", dtype="bfloat16", **options):
    base = load_model(tiny_model_folder(tmp_path / "base", family), dtype=dtype)
    direction = torch.randn(base.d_model, generator=torch.Generator().manual_seed(1))
    strengths = EditStrengths.from_kernels(
        base.n_layers, attention=LayerKernel(1.0, 1.5, 0.1, 0.9), mlp=LayerKernel(0.0, 2.0, 0.3, 1.0), embedding=0.5
    )
    return base, export_orthogonalized(base, direction, tmp_path / "export", strengths=strengths, **options)


def _own(model):
    return {name: (p.data_ptr(), p.detach().clone()) for name, p in model.hf_model.named_parameters()}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_swapped_model_is_the_export_loaded_alone_and_the_base_comes_back(tmp_path, family):
    base, out = _export(tmp_path, family)
    alone = load_model(out, dtype="bfloat16")
    before, logits, replies = _own(base), base.forward(IDS), base.generate(["hello there"], max_new_tokens=6)
    swap = WeightSwap.plan(base, out)
    assert swap is not None and swap.names
    with swap.applied():
        assert torch.equal(base.forward(IDS), alone.forward(IDS))
        assert base.generate(["hello there"], max_new_tokens=6) == alone.generate(["hello there"], max_new_tokens=6)
    after = _own(base)
    assert {n: p for n, (p, _) in after.items()} == {n: p for n, (p, _) in before.items()}  # the same tensors
    assert all(torch.equal(after[n][1], before[n][1]) for n in before)
    assert torch.equal(base.forward(IDS), logits)
    assert base.generate(["hello there"], max_new_tokens=6) == replies


def test_only_the_tensors_the_edit_changed_are_swapped(tmp_path):
    base, out = _export(tmp_path, dtype="float32")
    stored = FolderTensors(out)
    plain = {n.replace("._original_component", ""): p for n, p in base.hf_model.named_parameters()}
    changed = sorted(n for n in stored.where if n in plain and not torch.equal(stored.get(n, torch.float32), plain[n]))
    assert changed and len(changed) < len(stored.where)
    assert sorted(WeightSwap.plan(base, out).names) == changed


def test_a_swap_cannot_be_nested_and_a_failed_block_restores_the_base(tmp_path):
    base, out = _export(tmp_path)
    before = _own(base)
    swap = WeightSwap.plan(base, out)
    with pytest.raises(RuntimeError, match="inside"), swap.applied():
        with pytest.raises(MechrefError, match="cannot be nested"), swap.applied():
            pass
        raise RuntimeError("inside")
    assert all(torch.equal(p.detach(), before[n][1]) for n, p in base.hf_model.named_parameters())


def test_a_folder_of_another_model_or_layout_is_no_swap(tmp_path):
    base, out = _export(tmp_path, dtype="float32")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-3}))
    assert WeightSwap.plan(base, out) is None  # computes something else than the base with other weights
    (out / "config.json").write_text(json.dumps(config))
    settings = json.loads((out / "generation_config.json").read_text())
    (out / "generation_config.json").write_text(json.dumps({**settings, "repetition_penalty": 1.3}))
    assert WeightSwap.plan(base, out) is None  # greedy decoding would differ
    (out / "generation_config.json").write_text(json.dumps(settings))
    assert WeightSwap.plan(base, out) is not None
    for file in out.glob("*.safetensors*"):
        file.unlink()
    tensors = load_file(str(tmp_path / "base" / "model.safetensors"))
    save_file({f"transformer.{k}": v for k, v in tensors.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    assert WeightSwap.plan(base, out) is None  # names the base does not have


def test_a_model_whose_bridge_derives_tensors_from_the_stored_ones_is_no_swap(tmp_path):
    """phi3's bridge splits the fused attention and MLP input matrices into parameters of its own: a
    swap of the stored ones would leave those stale, so the folder is loaded beside the model instead."""
    base, out = _export(tmp_path, "phi3")
    assert WeightSwap.plan(base, out) is None


def test_an_export_that_unties_tied_tensors_swaps_the_slot_it_changed(tmp_path):
    """A tied base whose export edits the embedding and stores the unembedding unchanged (untied):
    inside the block the embedding slot holds the folder's tensor and the unembedding the base's; after
    it, the two slots hold one parameter again."""
    base = load_model(tiny_model_folder(tmp_path / "base", "qwen2"), dtype="float32")
    embedding, unembedding = base.hf_model.get_input_embeddings(), base.hf_model.get_output_embeddings()
    if embedding.weight is not unembedding.weight:
        pytest.skip("the tiny qwen2 model does not tie its embeddings")
    folder = tmp_path / "untied"
    folder.mkdir()
    for file in (tmp_path / "base").iterdir():
        if file.suffix != ".safetensors":
            (folder / file.name).write_bytes(file.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    tensors = load_file(str(tmp_path / "base" / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"] + 0.5
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    alone, logits = load_model(folder, dtype="float32"), base.forward(IDS)
    swap = WeightSwap.plan(base, folder)
    assert swap is not None and swap.names == ["model.embed_tokens.weight"]
    with swap.applied():
        assert torch.equal(base.forward(IDS), alone.forward(IDS))
        assert base.hf_model.get_input_embeddings().weight is not base.hf_model.get_output_embeddings().weight
    assert base.hf_model.get_input_embeddings().weight is base.hf_model.get_output_embeddings().weight
    assert torch.equal(base.forward(IDS), logits)


def _resident_pages(tensor):
    import numpy as np

    page = 4096
    start = -(-tensor.data_ptr() // page) * page
    end = (tensor.data_ptr() + tensor.numel() * tensor.element_size()) // page * page
    with open("/proc/self/pagemap", "rb") as handle:
        handle.seek(start // page * 8)
        entries = np.frombuffer(handle.read((end - start) // page * 8), dtype=np.uint64)
    return int(((entries >> np.uint64(63)) & np.uint64(1)).sum())


def test_pages_of_a_loaded_models_file_leave_memory_and_come_back_the_same(tmp_path):
    model = load_model(tiny_model_folder(tmp_path / "m"), dtype="float32")
    weight = model.hf_model.get_input_embeddings().weight
    expected, logits = weight.detach().clone(), model.forward(IDS)
    assert _resident_pages(weight) > 0
    if not drop_file_pages(weight):
        pytest.skip("the loaded weights are not memory-mapped here, or the system cannot tell which pages are the file's")
    assert _resident_pages(weight) == 0
    assert torch.equal(weight, expected) and torch.equal(model.forward(IDS), logits)  # read back from the file


def test_a_written_page_is_never_dropped(tmp_path):
    model = load_model(tiny_model_folder(tmp_path / "m"), dtype="float32")
    weight = model.hf_model.get_input_embeddings().weight
    if weight.numel() * weight.element_size() < 2 * 4096:
        pytest.skip("the tiny model's embedding is smaller than two pages")
    weight.sum()
    with torch.no_grad():
        weight.view(-1)[weight.numel() // 2] += 1  # an edit in place (a whole page's): that page is an anonymous copy now
    edited = weight.detach().clone()
    assert drop_file_pages(weight) is False
    assert torch.equal(weight, edited)


def test_anonymous_memory_is_never_dropped():
    tensor = torch.randn(1 << 16)
    copy = tensor.clone()
    assert drop_file_pages(tensor) is False
    assert torch.equal(tensor, copy)


def test_inside_the_block_the_models_own_versions_of_the_swapped_tensors_are_not_resident(tmp_path):
    """One version of each edited tensor in memory: the model's own (pages of its file) leave resident
    memory while the folder's take their place, and are read back, unchanged, after the block."""
    base, out = _export(tmp_path, dtype="float32")
    base.forward(IDS)  # every weight resident, as after any analysis
    swap = WeightSwap.plan(base, out)
    own = {c.name: c.parameter for c in swap.changes if c.module is None}
    assert own
    if str(tmp_path / "base") not in Path("/proc/self/maps").read_text():
        pytest.skip("the loaded weights are not memory-mapped here")
    before = {name: p.detach().clone() for name, p in own.items()}
    with swap.applied():
        kept = [c.own for c in swap.changes if c.own is not None and c.own.numel() * c.own.element_size() >= 4 * 4096]
        assert kept and all(_resident_pages(t) == 0 for t in kept)
    assert all(torch.equal(p.detach(), before[name]) for name, p in own.items())


def test_a_mapped_tensor_smaller_than_a_page_has_nothing_whole_to_drop(tmp_path):
    """Only whole pages inside the tensor are dropped (a page it shares with a neighbour stays): a norm's
    weight of a few hundred bytes covers none, and says so (False) rather than claiming a drop of nothing."""
    model = load_model(tiny_model_folder(tmp_path / "m"), dtype="float32")
    norm = next(p for n, p in model.hf_model.named_parameters() if "norm" in n)
    assert norm.numel() * norm.element_size() < 4096
    if str(tmp_path / "m") not in Path("/proc/self/maps").read_text():
        pytest.skip("the loaded weights are not memory-mapped here")
    assert drop_file_pages(norm) is False
