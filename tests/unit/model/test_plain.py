"""Plain transformers models loaded tensor by tensor are the ones from_pretrained loads; the
unembedding reads a contiguous slice with the same logits and without a copy of the matrix per row;
freed memory goes back to the system."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from mechref.framework.memory import MemoryLog, give_back_freed, resident_bytes
from mechref.model.plain import contiguous_unembedding, load_plain
from mechref.model.tensors import FolderTensors
from mechref.testing import FAMILIES, MOE_FAMILIES, tiny_hf_model, tiny_model_folder

IDS = torch.tensor([[3, 17, 42, 99, 5, 250, 7, 61], [9, 8, 7, 6, 5, 4, 3, 2]])


def _same_model(ours, theirs):
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    for name, buffer in theirs.named_buffers():  # computed from the config (rotary frequencies), not stored
        assert torch.equal(dict(ours.named_buffers())[name], buffer), name
    with torch.no_grad():
        assert torch.equal(ours(IDS).logits, theirs(IDS).logits)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "stored, loaded", [("float32", torch.float32), ("float32", torch.bfloat16), ("bfloat16", torch.bfloat16)]
)
def test_a_folder_read_tensor_by_tensor_is_the_model_from_pretrained_loads(tmp_path, family, stored, loaded):
    folder = tmp_path / "m"
    tiny_hf_model(family).to(getattr(torch, stored)).save_pretrained(folder)
    ours = load_plain(folder, loaded, attn_implementation="eager")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=loaded, attn_implementation="eager")
    if family in MOE_FAMILIES:
        # Saved with one tensor per expert, which from_pretrained fuses while loading: not read tensor by tensor.
        assert ours is None and any(".experts.0." in name for name in FolderTensors(folder).where)
        return
    assert ours is not None
    _same_model(ours, theirs)
    assert ours.generation_config.to_dict() == theirs.generation_config.to_dict()


def test_the_folders_generation_settings_are_loaded(tmp_path):
    folder = tiny_model_folder(tmp_path / "m")
    path = folder / "generation_config.json"
    settings = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**settings, "repetition_penalty": 1.3}))
    assert load_plain(folder, torch.float32).generation_config.repetition_penalty == 1.3


def test_a_folder_whose_names_transformers_renames_is_left_to_from_pretrained(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tiny_model_folder(tmp_path / "m")
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({f"transformer.{k}": v for k, v in tensors.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert load_plain(folder, torch.float32) is None


def test_a_folder_missing_a_weight_says_which(tmp_path):
    from safetensors.torch import load_file, save_file

    from mechref.errors import MechrefError

    folder = tiny_model_folder(tmp_path / "m")
    tensors = load_file(str(folder / "model.safetensors"))
    name = next(k for k in tensors if "mlp" in k)
    save_file({k: v for k, v in tensors.items() if k != name}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MechrefError, match=name.replace(".", r"\.")):
        load_plain(folder, torch.float32)


def test_shared_tensors_replace_equal_ones_only(tmp_path):
    folder = tiny_model_folder(tmp_path / "m")
    base = load_plain(folder, torch.float32)
    shared = {name: t.clone() for name, t in base.state_dict().items()}
    changed = next(name for name in shared if name.endswith("mlp.down_proj.weight"))
    shared[changed] = shared[changed] + 1  # not the folder's: must not be used
    ours = load_plain(folder, torch.float32, shared=shared)
    pointers = {name: t.data_ptr() for name, t in shared.items()}
    state = ours.state_dict()
    assert state[changed].data_ptr() != pointers[changed] and torch.equal(state[changed], base.state_dict()[changed])
    same = [n for n in state if n != changed and n in pointers and "lm_head" not in n]
    assert same and all(state[n].data_ptr() == pointers[n] for n in same)


def test_a_contiguous_unembedding_gives_the_same_first_token_logits(tmp_path):
    """generate's first step reads the last position (a strided slice): the same logits from a
    contiguous copy of it, for a single position, in bfloat16 (where torch's kernels differ)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 3000, bias=False).to(torch.bfloat16)
    hidden = torch.randn(8, 11, 64).to(torch.bfloat16)
    with torch.no_grad():
        strided = head(hidden[:, -1:, :])
        model = torch.nn.Module()
        model.get_output_embeddings = lambda: head  # type: ignore[assignment,method-assign]
        with contiguous_unembedding(model):
            contiguous = head(hidden[:, -1:, :])
    assert torch.equal(strided, contiguous)
    assert not head._forward_pre_hooks  # removed after the block


def test_a_contiguous_unembedding_copies_no_matrix_per_row():
    """Without the hook torch's CPU linear copies the [vocab, width] matrix once per row of a strided
    bfloat16 slice (8 rows: 8 copies, for weights that need no gradient, as loaded models' do); with
    it the peak above the inputs stays under one copy."""
    head = torch.nn.Linear(512, 60_000, bias=False).to(torch.bfloat16).requires_grad_(False)
    matrix = head.weight.numel() * head.weight.element_size()
    hidden = torch.randn(8, 5, 512).to(torch.bfloat16)
    model = torch.nn.Module()
    model.get_output_embeddings = lambda: head  # type: ignore[assignment,method-assign]
    log = MemoryLog()
    with torch.no_grad(), contiguous_unembedding(model):
        head(hidden[:, -1:, :])  # warm-up: the kernels' own buffers
        log.mark("before")
        log.mark("linear")
        head(hidden[:, -1:, :])
        log.mark(None)
    if not log.exact:
        pytest.skip("this system does not let a process reset its resident-memory peak")
    assert log.peaks["linear"] - log.peaks["before"] < matrix


def test_freed_memory_goes_back_to_the_system():
    """Tensors converted from float32 (as a GGUF's are dequantized) stay in glibc's heaps when freed
    (0.56 GiB of 0.56 here, without the call); given back, the resident memory returns to about where
    it was: a model deleted after a comparison no longer counts."""
    import numpy as np

    if not give_back_freed():
        pytest.skip("this C library has no malloc_trim")
    start = resident_bytes()
    blocks, kept = [], []
    for i in range(256):
        dequantized = np.ones(2**20 + 1024 * i, dtype=np.float32)
        blocks.append(torch.from_numpy(dequantized).to(torch.bfloat16))
        kept.append(torch.ones(16))  # small tensors that outlive the blocks, between them
        del dequantized
    assert resident_bytes() - start > 2**30 * 0.45
    del blocks
    give_back_freed()
    assert resident_bytes() - start < 2**30 * 0.1


@pytest.mark.parametrize("chunk", [1, 64, 10**9])
def test_a_tensor_converted_in_chunks_is_the_tensor_converted_whole(tmp_path, monkeypatch, chunk):
    """Chunks of one row, of a few rows (the last one short) and the whole tensor at once: the same values."""
    from safetensors.torch import save_file

    from mechref.model import tensors as module

    torch.manual_seed(0)
    stored = {"a": torch.randn(7, 5), "b": torch.randn(3), "i": torch.arange(6)}
    save_file(stored, str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(module, "CHUNK_BYTES", chunk)
    folder = module.FolderTensors(tmp_path)
    for name, tensor in stored.items():
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            got = folder.get(name, dtype)
            want = tensor.to(dtype) if tensor.is_floating_point() else tensor
            assert got.dtype == want.dtype and torch.equal(got, want), (name, dtype)


@pytest.mark.parametrize("chunk, opens", [(140, 1), (139, 3)])
def test_a_tensor_of_exactly_the_chunk_size_is_read_whole(tmp_path, monkeypatch, chunk, opens):
    """The boundary: a 7x5 float32 tensor (140 bytes) is read in one piece at a chunk of 140 bytes, in
    chunks of 6 rows (two, the file opened again for each) at 139."""
    import safetensors
    from safetensors.torch import save_file

    from mechref.model import tensors as module

    stored = torch.randn(7, 5)
    save_file({"a": stored}, str(tmp_path / "model.safetensors"))
    folder = module.FolderTensors(tmp_path)
    calls = []
    real = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(module, "CHUNK_BYTES", chunk)
    assert torch.equal(folder.get("a", torch.bfloat16), stored.to(torch.bfloat16))
    assert len(calls) == opens
