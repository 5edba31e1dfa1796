"""GGUF export of an edited model, read back by ``transformers``' own GGUF loader.

The expected model is computed apart from the writer: the orthogonalized weights, each matrix
rounded through the file type on its own (``gguf``'s reference quantizer), in Hugging Face order.
The file read back must give its logits, and its tokenizer must encode as the original does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechref.edits.orthogonalize import orthogonalize_weights, writer_module_names
from mechref.edits.strengths import EditStrengths
from mechref.errors import MechrefError
from mechref.model.loading import load_model
from mechref.testing import tiny_hf_model, tiny_tokenizer
from tests.reference import plain_model

gguf = pytest.importorskip("gguf")
from mechref.edits import export_gguf, write_gguf  # noqa: E402

IDS = torch.tensor([[3, 17, 42, 99, 5, 250, 7, 61, 12, 300]])


def _saved(tmp_path, family):
    tokenizer = tiny_tokenizer("chatml" if family.startswith("qwen") else "llama3")
    hf_model = tiny_hf_model(family, vocab_size=len(tokenizer))
    if family == "qwen3":
        # transformers' GGUF reader does not read Qwen3's head width (llama.cpp does) and takes the
        # default, 128, as every released Qwen3 has: give the tiny model that width too.
        import transformers

        config = transformers.Qwen3Config(**{**hf_model.config.to_dict(), "head_dim": 128})
        torch.manual_seed(0)
        hf_model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    folder = tmp_path / family
    hf_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _round_through(model, file_type):
    """Every matrix of ``model`` quantized and dequantized on its own, as the file stores it."""
    kind = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
    if file_type == "f32":
        return model
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                array = param.numpy()
                back = gguf.quants.dequantize(gguf.quants.quantize(array, kind[file_type]), kind[file_type])
                param.copy_(torch.from_numpy(back.reshape(array.shape).copy()))
    return model


@pytest.mark.parametrize("family", ["qwen2", "llama", "qwen3", "mistral"])
@pytest.mark.parametrize("file_type", ["f32", "bf16", "q8_0"])
def test_the_file_read_back_is_the_edited_model_in_that_file_type(tmp_path, family, file_type):
    from transformers import AutoModelForCausalLM

    folder = _saved(tmp_path, family)
    model = load_model(str(folder), device="cpu")
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(4))
    strengths = EditStrengths(attention=(1.0, 0.5, 0.8), mlp=(0.7, 1.0, 0.2), embedding=0.9)
    out = export_gguf(model, direction, tmp_path / "edited.gguf", file_type=file_type, strengths=strengths)
    expected = plain_model(folder)
    orthogonalize_weights(expected, direction, writer_module_names(model, expected), strengths=strengths)
    expected = _round_through(expected, file_type)
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, expected(IDS).logits, rtol=1e-4, atol=1e-4)
        assert (loaded(IDS).logits - plain_model(folder)(IDS).logits).abs().max() > 1e-2  # the edit is in the file
    fields = gguf.GGUFReader(str(out)).fields
    assert "mechref.edit" in fields and "mechref.mechref_version" in fields


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_the_tokenizer_read_back_has_the_same_vocabulary_and_special_tokens(tmp_path, family):
    from transformers import AutoTokenizer

    folder = _saved(tmp_path, family)
    model = load_model(str(folder), device="cpu")
    out = export_gguf(model, torch.randn(model.d_model), tmp_path / "edited.gguf", file_type="f16")
    loaded = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=out.name)
    original, read_back = model.tokenizer.get_vocab(), loaded.get_vocab()
    # Every token keeps its id (transformers may add a token of its own after them, as for Llama).
    assert {text: read_back.get(text) for text in original} == original
    assert all(i >= len(original) for text, i in read_back.items() if text not in original)
    for special in model.tokenizer.all_special_tokens:  # chat markers stay one token each
        assert loaded(special, add_special_tokens=False)["input_ids"] == [model.tokenizer.convert_tokens_to_ids(special)]
    if family == "qwen2":
        # The tiny Qwen tokenizer splits words as Qwen2's does, so whole prompts encode alike. (The tiny
        # Llama one does not split as Llama-3's pre-tokenizer, which the GGUF names, so its prompts can differ.)
        text = model.chat.format("How do I bake a cake at home today? Explain how photosynthesis works.")
        assert loaded(text, add_special_tokens=False)["input_ids"] == model.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_model_loaded_from_a_gguf_keeps_its_source_metadata(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = _saved(tmp_path, "qwen2")
    source = write_gguf(plain_model(folder), tmp_path / "source.gguf", file_type="f32", tokenizer_folder=folder)
    model = load_model(str(source), device="cpu")
    assert model.source.startswith("gguf:")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    direction = torch.randn(model.d_model)
    out = export_gguf(model, direction, out_dir / "edited.gguf", file_type="f32")
    before, after = gguf.GGUFReader(str(source)).fields, gguf.GGUFReader(str(out)).fields
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "qwen2.context_length", "tokenizer.chat_template"):
        assert after[key].contents() == before[key].contents(), key
    expected = plain_model(folder)
    orthogonalize_weights(expected, direction, writer_module_names(model, expected))
    loaded = AutoModelForCausalLM.from_pretrained(str(out_dir), gguf_file=out.name, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, expected(IDS).logits, rtol=1e-4, atol=1e-4)


def test_unsupported_families_file_types_and_targets_are_refused(tmp_path):
    from mechref.testing import tiny_model

    folder = _saved(tmp_path, "qwen2")
    model = load_model(str(folder), device="cpu")
    direction = torch.randn(model.d_model)
    with pytest.raises(MechrefError, match="unknown GGUF file type"):
        export_gguf(model, direction, tmp_path / "x.gguf", file_type="q4_k")
    with pytest.raises(MechrefError, match=r"ending in \.gguf"):
        export_gguf(model, direction, tmp_path / "x.bin")
    foreign = tmp_path / "foreign.gguf"
    foreign.write_bytes(b"not mine")
    for overwrite in (False, True):
        with pytest.raises(MechrefError, match=r"foreign\.gguf exists"):
            export_gguf(model, direction, foreign, overwrite=overwrite)
    assert foreign.read_bytes() == b"not mine"
    mine = export_gguf(model, direction, tmp_path / "mine.gguf", file_type="f16")
    with pytest.raises(MechrefError, match="pass overwrite"):
        export_gguf(model, direction, mine)
    assert export_gguf(model, direction, mine, file_type="f16", overwrite=True) == mine
    with pytest.raises(MechrefError, match="weight orthogonalization does not support gpt2"):
        export_gguf(tiny_model("gpt2"), direction, tmp_path / "g.gguf")
    # Gemma-2 is edited (through its post-norms), but its llama.cpp tensor layout is not verified here.
    with pytest.raises(MechrefError, match=r"GGUF export supports .* not gemma2 .* export a transformers folder"):
        export_gguf(tiny_model("gemma2"), direction, tmp_path / "g.gguf")
    assert not (tmp_path / "g.gguf").exists() and not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("layer", [2, 3])
def test_a_control_vector_applied_as_llama_cpp_does_equals_activation_addition(tmp_path, layer):
    """llama.cpp adds ``direction.N`` to the output of block N (its graph's ``l_out``); applying the
    file that way with a plain PyTorch hook must give mechref's activation addition at ``layer``."""
    from mechref.edits import export_control_vector
    from mechref.interventions import activation_addition
    from mechref.testing import tiny_model

    model = tiny_model("qwen2", n_layers=4)
    vector = torch.randn(model.d_model, generator=torch.Generator().manual_seed(5))
    out = export_control_vector(model, vector, layer, tmp_path / "refusal.gguf", coefficient=-2.0)
    reader = gguf.GGUFReader(str(out))
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "controlvector"
    ((name, values),) = [(t.name, torch.from_numpy(np.array(t.data))) for t in reader.tensors]
    block = int(name.removeprefix("direction."))

    def add_to_block_output(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden + values.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    ids, mask = model.tokenize(model.chat.format_many(["Write a poem", "Hi"]))
    handle = model.hf_model.model.layers[block].register_forward_hook(add_to_block_output)
    try:
        as_llama_cpp = model.forward(ids, mask)
    finally:
        handle.remove()
    with activation_addition(model, vector, layer=layer, coefficient=-2.0):
        expected = model.forward(ids, mask)
    torch.testing.assert_close(as_llama_cpp, expected, rtol=1e-4, atol=1e-4)
    assert (expected - model.forward(ids, mask)).abs().max() > 1e-2


def test_a_control_vector_cannot_reach_the_first_two_blocks(tmp_path):
    from mechref.edits import export_control_vector
    from mechref.testing import tiny_model

    model = tiny_model("qwen2")
    with pytest.raises(MechrefError, match="layer 2 or later"):
        export_control_vector(model, torch.randn(model.d_model), 1, tmp_path / "cv.gguf")
    assert not (tmp_path / "cv.gguf").exists()
