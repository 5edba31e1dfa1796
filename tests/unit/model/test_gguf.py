"""Dequantizing a GGUF tensor by tensor (mechref.model.gguf) on tiny GGUF files written here:
the weights must be exactly the quantized originals, Llama's Q/K rows put back in Hugging Face
order, in the dtype asked for, in shards of bounded size, and load into the same model that
``transformers``' own GGUF loader builds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mechref.model.gguf import gguf_config, shard_name, write_gguf_weights
from mechref.testing import tiny_hf_model

gguf = pytest.importorskip("gguf")
Q8_0 = gguf.GGMLQuantizationType.Q8_0


def _permute_like_llama_cpp(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp's converter interleaves the rotary halves of Llama's q/k rows.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path, arch: str) -> dict[str, torch.Tensor]:
    """Write a tiny random model of ``arch`` (qwen2 or llama) as a GGUF with Q8_0 matrices; return
    the weights a correct reader must recover (each matrix quantized and dequantized, in HF order)."""
    hf_model = tiny_hf_model(arch, vocab_size=512)
    config = hf_model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    gguf_arch = gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.QWEN2
    names = gguf.get_tensor_name_map(gguf_arch, config.num_hidden_layers)
    expected = {}
    for name, value in hf_model.state_dict().items():
        if config.tie_word_embeddings and name == "lm_head.weight":
            continue  # a tied GGUF has no output matrix
        base, suffix = name.rsplit(".", 1)
        w = value.float().numpy()
        stored = w
        if w.ndim == 2:
            # Q8_0 blocks run along rows, so quantizing commutes with reordering rows.
            expected[name] = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w, Q8_0), Q8_0).copy())
            if arch == "llama" and base.endswith(("q_proj", "k_proj")):
                heads = config.num_attention_heads if base.endswith("q_proj") else config.num_key_value_heads
                w = _permute_like_llama_cpp(w, heads)
            stored = gguf.quants.quantize(w, Q8_0)
            writer.add_tensor(f"{names.get_name(base)}.{suffix}", stored, raw_dtype=Q8_0)
        else:
            expected[name] = value.float()
            writer.add_tensor(f"{names.get_name(base)}.{suffix}", stored)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def _read_folder(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(str(folder / shard)))
    assert set(tensors) == set(index["weight_map"])
    return tensors


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_weights_are_the_quantized_originals_in_hugging_face_order(tmp_path, arch):
    path = tmp_path / f"{arch}.gguf"
    expected = write_tiny_gguf(path, arch)
    out = tmp_path / "out"
    out.mkdir()
    shard_bytes = 40_000  # several shards for a model this small
    index = write_gguf_weights(path, out, gguf_config(path), torch.float32, shard_bytes=shard_bytes)
    got = _read_folder(out)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].dtype == torch.float32 and torch.equal(got[name], value), name
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards == [shard_name(i, len(shards)) for i in range(len(shards))]
    assert index["metadata"]["total_size"] == sum(v.numel() * 4 for v in expected.values())
    for shard in shards:
        members = [got[n] for n, s in index["weight_map"].items() if s == shard]
        # A shard holds one tensor larger than the bound, or tensors that fit it together.
        assert len(members) == 1 or sum(m.numel() * 4 for m in members) <= shard_bytes
    assert not list(out.glob("*.tmp"))


def test_bfloat16_weights_are_the_float32_ones_cast(tmp_path):
    path = tmp_path / "qwen2.gguf"
    expected = write_tiny_gguf(path, "qwen2")
    out = tmp_path / "out"
    out.mkdir()
    write_gguf_weights(path, out, gguf_config(path), torch.bfloat16)
    got = _read_folder(out)
    for name, value in expected.items():
        assert got[name].dtype == torch.bfloat16 and torch.equal(got[name], value.to(torch.bfloat16)), name


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_the_folder_loads_into_the_model_transformers_builds_from_the_gguf(tmp_path, arch):
    from transformers import AutoModelForCausalLM

    path = tmp_path / f"{arch}.gguf"
    write_tiny_gguf(path, arch)
    out = tmp_path / "out"
    out.mkdir()
    config = gguf_config(path)
    write_gguf_weights(path, out, config, torch.float32, shard_bytes=100_000)
    config.save_pretrained(str(out))
    ours = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    theirs = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 200, 7, 3]])
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, theirs(ids).logits)
