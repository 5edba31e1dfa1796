"""The exports and their verification hold one model in memory: each is checked against the path
that loaded a second copy (the same bytes), and against the kernel's count of resident memory."""

from __future__ import annotations

import pytest
import torch
import transformers
from safetensors.torch import load_file

from mechref import load_model
from mechref.edits.gguf import export_gguf, gguf_tensors
from mechref.edits.orthogonalize import edited_copy, export_orthogonalized
from mechref.edits.strengths import EditStrengths, LayerKernel
from mechref.errors import MechrefError
from mechref.framework.memory import MemoryLog
from mechref.model.loading import cast_weights
from mechref.model.plain import plain_view, weights_released
from mechref.testing import tiny_model_folder, tiny_tokenizer

FAMILIES = ("qwen2", "llama", "qwen3", "mistral", "phi3")
IDS = torch.tensor([[3, 17, 42, 99, 5, 250, 7, 61]])


def _strengths(n_layers):
    return EditStrengths.from_kernels(
        n_layers, attention=LayerKernel(1.0, 1.5, 0.1, 0.9), mlp=LayerKernel(0.0, 2.0, 0.3, 1.0), embedding=0.5
    )


def _direction(model, seed=1):
    return torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed))


def _state(folder):
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant", ["full", "partial", "norm"])
def test_the_streamed_export_writes_the_tensors_the_edited_copy_saves(tmp_path, family, variant):
    """Tensor by tensor from the folder equals the whole float32 copy edited and saved (tied embeddings
    untied, partial strengths and the norm-preserving edit included), byte for byte."""
    model = load_model(tiny_model_folder(tmp_path / "base", family), dtype="bfloat16")
    strengths = _strengths(model.n_layers) if variant == "partial" else None
    norm = variant == "norm"
    direction = _direction(model)
    out = export_orthogonalized(model, direction, tmp_path / "new", strengths=strengths, norm_preserving=norm)
    copy, _ = edited_copy(model, direction, "test", strengths, norm)
    copy.save_pretrained(tmp_path / "old")
    new, old = _state(out), _state(tmp_path / "old")
    assert sorted(new) == sorted(old)
    for name in old:
        assert new[name].dtype == torch.float32 and torch.equal(new[name], old[name]), name
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert loaded.config.tie_word_embeddings is False
    written = transformers.AutoConfig.from_pretrained(out).to_dict()
    saved = transformers.AutoConfig.from_pretrained(tmp_path / "old").to_dict()
    assert {k: v for k, v in written.items() if k not in ("transformers_version", "_name_or_path")} == {
        k: v for k, v in saved.items() if k not in ("transformers_version", "_name_or_path")
    }
    assert torch.equal(loaded(IDS).logits, copy(IDS).logits)


def test_a_plain_view_computes_the_loaded_model_without_a_copy(tmp_path):
    model = load_model(tiny_model_folder(tmp_path / "base", "llama"), dtype="float32")
    view = plain_view(model)  # what from_pretrained loads (sdpa): what mechref computes unhooked
    ours = {p.data_ptr() for p in model.hf_model.parameters()}
    assert {p.data_ptr() for p in view.parameters()} <= ours
    with torch.no_grad():
        assert torch.equal(view(IDS).logits, model.hf_model(IDS).logits)


def test_released_weights_come_back_byte_for_byte(tmp_path):
    model = load_model(tiny_model_folder(tmp_path / "base", "qwen2"), dtype="bfloat16")
    before = model.forward(IDS)
    with weights_released(model):
        assert all(p.numel() == 0 for p in model.hf_model.parameters())
    assert torch.equal(model.forward(IDS), before)


def test_weights_edited_in_memory_cannot_come_back_from_the_folder_and_say_so(tmp_path):
    model = load_model(tiny_model_folder(tmp_path / "base", "qwen2"), dtype="float32")
    with torch.no_grad():
        model.hf_model.get_input_embeddings().weight[0, 0] += 1.0
    with pytest.raises(MechrefError, match="differed from its folder"), weights_released(model):
        pass


def test_the_streamed_gguf_holds_the_edited_copys_tensors(tmp_path):
    from gguf import GGUFReader

    model = load_model(tiny_model_folder(tmp_path / "base", "qwen2"), dtype="bfloat16")
    direction = _direction(model)
    path = export_gguf(model, direction, tmp_path / "m.gguf", file_type="f32")
    copy, _ = edited_copy(model, direction, "test")
    expected = dict(gguf_tensors(copy, "qwen2"))
    read = {t.name: torch.from_numpy(t.data.copy()).reshape(expected[t.name].shape) for t in GGUFReader(str(path)).tensors}
    assert sorted(read) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(read[name], tensor), name


def _big_folder(folder):
    """A model whose weights (about 230 MB in float32, a fourteenth of it the embedding, the largest
    tensor) stand well above the process's noise (the allocator keeps some freed blocks) and above
    any one tensor's edit."""
    tokenizer = tiny_tokenizer()
    config = transformers.Qwen2Config(
        vocab_size=8000, hidden_size=512, intermediate_size=1024, num_hidden_layers=24, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_exporting_holds_no_second_copy_of_the_weights(tmp_path):
    """The kernel's count of the export's peak resident memory, above what the loaded model holds,
    stays under three quarters of a copy of its weights (loading a copy, as the export once did, is a
    whole one, and writing it with save_pretrained another)."""
    model = load_model(_big_folder(tmp_path / "big"), dtype="float32")
    weights = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.hf_model.parameters()}.values())
    model.forward(IDS)  # every weight resident, as after any analysis
    direction = _direction(model)
    export_orthogonalized(model, direction, tmp_path / "warm-up")  # the libraries it imports on first use
    log = MemoryLog()
    log.mark("before")
    log.mark("export")
    export_orthogonalized(model, direction, tmp_path / "export")
    log.mark(None)
    if not log.exact:
        pytest.skip("this system does not let a process reset its resident-memory peak")
    assert log.peaks["export"] - log.peaks["before"] < 0.75 * weights


@pytest.mark.parametrize("family", FAMILIES)
def test_an_export_loaded_beside_its_base_is_the_folder_and_shares_what_the_edit_left(tmp_path, family):
    """load_sharing gives the model load_model gives (logits and greedy replies, byte for byte), with
    every tensor the edit left alone shared with the base, and its own copy of the edited ones."""
    from mechref.model.plain import load_sharing

    base = load_model(tiny_model_folder(tmp_path / "base", family), dtype="bfloat16")
    out = export_orthogonalized(base, _direction(base), tmp_path / "export", strengths=_strengths(base.n_layers))
    shared = load_sharing(out, base)
    alone = load_model(out, dtype="bfloat16")
    assert torch.equal(shared.forward(IDS), alone.forward(IDS))
    assert shared.generate(["hello there"], max_new_tokens=6) == alone.generate(["hello there"], max_new_tokens=6)
    ours = {p.data_ptr() for p in base.hf_model.parameters()}
    theirs = {name: p.data_ptr() for name, p in shared.hf_model.named_parameters()}
    norms = [name for name in theirs if "norm" in name]
    assert norms and all(theirs[name] in ours for name in norms)  # left alone by the edit: shared
    embedding = shared.hf_model.get_input_embeddings().weight
    assert embedding.data_ptr() not in ours  # edited: its own


def test_a_folder_that_is_not_an_edit_of_the_base_loads_whole(tmp_path):
    from mechref.model.plain import load_sharing

    base = load_model(tiny_model_folder(tmp_path / "base", "qwen2", seed=0), dtype="float32")
    other = load_sharing(tiny_model_folder(tmp_path / "other", "qwen2", seed=1), base)
    ours = {p.data_ptr() for p in base.hf_model.parameters()}
    weights = [p for name, p in other.hf_model.named_parameters() if "norm" not in name and name.endswith("weight")]
    assert weights and not any(p.data_ptr() in ours for p in weights)  # (zero biases are equal, so shared)
    assert torch.equal(other.forward(IDS), load_model(tmp_path / "other", dtype="float32").forward(IDS))


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_a_gguf_loaded_tensor_by_tensor_is_the_model_transformers_loads(tmp_path, family):
    from mechref.analyses.export.verify import load_gguf

    model = load_model(tiny_model_folder(tmp_path / "base", family), dtype="bfloat16")
    path = export_gguf(model, _direction(model), tmp_path / "m.gguf", file_type="bf16")
    ours = load_gguf(path, torch.bfloat16)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.bfloat16)
    assert dict(ours.named_parameters()).keys() == dict(theirs.named_parameters()).keys()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(ours(IDS).logits, theirs(IDS).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_edited_tensors_put_into_a_plain_load_make_the_edited_copy_cast(tmp_path, family):
    from mechref.edits.orthogonalize import edited_tensors, put_tensors

    model = load_model(tiny_model_folder(tmp_path / "base", family), dtype="bfloat16")
    direction, strengths = _direction(model), _strengths(model.n_layers)
    plain = transformers.AutoModelForCausalLM.from_pretrained(model.folder, dtype=torch.bfloat16)
    put_tensors(plain, edited_tensors(model, direction, strengths, only_edited=True))
    copy, _ = edited_copy(model, direction, "test", strengths)
    copy = cast_weights(copy, torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(plain(IDS).logits, copy(IDS).logits)


def test_a_float32_folder_loaded_in_bfloat16_maps_one_tensor_at_a_time(tmp_path):
    """The verification loads a float32 export in bfloat16: from_pretrained maps the whole file while
    it converts it (the float32 weights and the bfloat16 copy, 1.5 times the file, at its peak);
    load_plain reads one tensor at a time (the bfloat16 copy, half the file, and one tensor)."""
    from mechref.model.plain import load_plain

    folder = _big_folder(tmp_path / "big")
    stored = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    load_plain(folder, torch.bfloat16)  # warm-up: the libraries it imports on first use
    log = MemoryLog()
    log.mark("before")
    log.mark("load")
    model = load_plain(folder, torch.bfloat16)
    log.mark(None)
    if not log.exact:
        pytest.skip("this system does not let a process reset its resident-memory peak")
    assert model is not None
    assert log.peaks["load"] - log.peaks["before"] < 0.75 * stored


def test_what_a_release_block_loaded_is_freed_before_the_weights_come_back(tmp_path):
    """A model converted inside weights_released (bfloat16 from a float32 folder: tensors the C
    allocator keeps when freed) and dropped there, kept alive only by a reference cycle as
    transformers models are, is returned to the system before the weights are loaded back: the
    block and the reload stay within a quarter copy of the weights above the loaded model (both at
    once: half a copy more)."""
    from mechref.model.plain import load_plain

    folder = _big_folder(tmp_path / "big")
    model = load_model(folder, dtype="float32")
    weights = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.hf_model.parameters()}.values())
    model.forward(IDS)  # every weight resident
    with weights_released(model):  # warm-up: the libraries it imports on first use
        pass
    log = MemoryLog()
    log.mark("before")
    log.mark("block")
    with weights_released(model):
        other = load_plain(folder, torch.bfloat16)
        assert other is not None
        other.cycle = [other]  # type: ignore[assignment]  # only the garbage collector frees it now
        del other
    log.mark(None)
    if not log.exact:
        pytest.skip("this system does not let a process reset its resident-memory peak")
    assert log.peaks["block"] < log.peaks["before"] + 0.25 * weights
