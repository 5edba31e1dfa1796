"""The edited model as one GGUF file, for llama.cpp, Ollama and everything built on them.

The weights are the orthogonalized model's (any edit variant), written in F32, F16, BF16 or
Q8_0 (norms and biases stay F32, as llama.cpp's own converter keeps them); tensor names and the
Q/K row order of Llama-style models follow llama.cpp's conventions (``gguf``'s tensor map).
The metadata comes from where the model came from: a model loaded from a GGUF (the embedded one,
or a local ``.gguf``) keeps every key of its source file, tokenizer included; a Hugging Face
folder gets its hyperparameters from the config and its tokenizer from ``tokenizer.json``
(byte-level BPE tokenizers only; anything else is refused rather than written half-right).

``transformers`` reads the file back (``from_pretrained(folder, gguf_file=name)``), which is how
mechref checks every export; llama.cpp itself is not run by the test suite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from mechref.errors import MechrefError

# transformers model type -> llama.cpp architecture (Mistral is written as Llama, as llama.cpp does).
GGUF_ARCHITECTURES = {"qwen2": "qwen2", "qwen3": "qwen3", "llama": "llama", "mistral": "llama"}
FILE_TYPES = ("f32", "f16", "bf16", "q8_0")
# Keys written anew for the edited file rather than copied from the source.
_REWRITTEN = ("general.architecture", "general.file_type", "general.quantization_version", "GGUF.")


def check_gguf_exportable(config, file_type: str) -> str:
    """The llama.cpp architecture name of a model, or a one-line error naming what is supported.

    >>> from transformers import Qwen2Config, GPT2Config
    >>> check_gguf_exportable(Qwen2Config(), "bf16")
    'qwen2'
    >>> check_gguf_exportable(GPT2Config(), "bf16")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mechref.errors.MechrefError: GGUF export supports llama, mistral, qwen2, qwen3 models, not gpt2 ...
    """
    if file_type not in FILE_TYPES:
        raise MechrefError(f"unknown GGUF file type {file_type!r}; choose one of {', '.join(FILE_TYPES)}")
    model_type = str(getattr(config, "model_type", None))
    if model_type not in GGUF_ARCHITECTURES:
        raise MechrefError(
            f"GGUF export supports {', '.join(sorted(GGUF_ARCHITECTURES))} models, not {model_type} "
            "(its tensor layout in llama.cpp is not verified here); export a transformers folder or a LoRA adapter instead"
        )
    return GGUF_ARCHITECTURES[model_type]


def _ggml_type(file_type: str):
    from gguf import GGMLQuantizationType as Q

    return {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[file_type]


def _llama_file_type(file_type: str) -> int:
    from gguf import LlamaFileType as F

    return int({"f32": F.ALL_F32, "f16": F.MOSTLY_F16, "bf16": F.MOSTLY_BF16, "q8_0": F.MOSTLY_Q8_0}[file_type])


def _permute_for_llama_cpp(weight: Tensor, n_head: int) -> Tensor:
    """llama.cpp stores Llama's q/k rows with the two rotary halves of each head interleaved."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(plain, architecture: str) -> list[tuple[str, Tensor]]:
    """``(gguf_name, float32 tensor)`` for every weight of a plain ``transformers`` model."""
    embedding = plain.get_input_embeddings().weight
    return list(_gguf_items(plain.config, plain.state_dict().items(), architecture, embedding))


def _gguf_items(config, items: Iterable[tuple[str, Tensor]], architecture: str, embedding: Tensor | None = None):
    """``(gguf_name, float32 tensor)`` for each ``(hf_name, tensor)`` of ``items``, one at a time."""
    import gguf

    arch = next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == architecture)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    for hf_name, value in items:
        tied = embedding is not None and (value is embedding or torch.equal(value, embedding))
        if hf_name == "lm_head.weight" and tied and config.tie_word_embeddings:
            continue  # tied: llama.cpp reads the embedding as the output matrix when output.weight is absent
        base, suffix = hf_name.rsplit(".", 1)
        name = names.get_name(base)
        if name is None:
            raise MechrefError(f"no GGUF name for {hf_name} in llama.cpp's {architecture} layout")
        tensor = value.detach().float().cpu()
        if architecture == "llama" and base.endswith(("self_attn.q_proj", "self_attn.k_proj")):
            heads = config.num_attention_heads if base.endswith("q_proj") else config.num_key_value_heads
            tensor = _permute_for_llama_cpp(tensor, heads)
        yield f"{name}.{suffix}", tensor


def _add_hyperparameters(writer, config) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)


def _add_tokenizer(writer, folder: Path, architecture: str, vocab_size: int) -> None:
    """Tokenizer keys from a Hugging Face ``tokenizer.json`` (byte-level BPE), as llama.cpp's own
    converter writes them: one entry per embedding row, special added tokens as control tokens,
    ids the tokenizer does not use as unused padding."""
    from gguf import TokenType
    from gguf.vocab import SpecialVocab

    tokenizer_json = folder / "tokenizer.json"
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8")) if tokenizer_json.is_file() else {}
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback") or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise MechrefError(
            f"GGUF export writes byte-level BPE tokenizers only; {folder} has another kind. "
            "Export a transformers folder and convert it with llama.cpp's convert_hf_to_gguf.py"
        )
    by_id: dict[int, tuple[str, TokenType]] = {i: (text, TokenType.NORMAL) for text, i in model["vocab"].items()}
    for added in spec.get("added_tokens", []):
        by_id[added["id"]] = (added["content"], TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED)
    size = max(vocab_size, max(by_id) + 1)
    tokens = [by_id.get(i, (f"[PAD{i}]", TokenType.UNUSED)) for i in range(size)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre({"qwen2": "qwen2", "qwen3": "qwen2"}.get(architecture, "llama-bpe"))
    writer.add_token_list([text for text, _ in tokens])
    writer.add_token_types([int(kind) for _, kind in tokens])
    SpecialVocab(folder, load_merges=True, n_vocab=size).add_to_gguf(writer, quiet=True)


def _copy_metadata(writer, source: Path) -> None:
    """Every key of the source GGUF but those that describe its own tensors' encoding."""
    from gguf import GGUFReader, GGUFValueType

    for key, field in GGUFReader(str(source)).fields.items():
        if key.startswith(_REWRITTEN) or not field.types:
            continue
        value: Any = field.contents()
        sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub_type)


def write_gguf(
    plain,
    path: Path,
    *,
    file_type: str = "bf16",
    tokenizer_folder: Path | None = None,
    metadata_from: Path | None = None,
    extra: dict[str, str] | None = None,
    tensors: Iterable[tuple[str, Tensor]] | None = None,
) -> Path:
    """Write ``plain`` (a ``transformers`` model) to ``path`` as a GGUF of ``file_type``, with its
    metadata copied from the GGUF ``metadata_from`` or built from the config and ``tokenizer_folder``.
    ``extra`` adds ``mechref.*`` string keys (the edit's provenance). ``tensors`` (``(name, tensor)``
    in the model's names, e.g. :func:`~mechref.edits.orthogonalize.edited_tensors`) replaces the
    model's own, and ``plain`` may then be just its config: each tensor is converted and spooled to
    disk as it comes, so the GGUF never sits in memory whole."""
    import gguf

    config = getattr(plain, "config", plain)
    architecture = check_gguf_exportable(config, file_type)
    writer = gguf.GGUFWriter(str(path), architecture, use_temp_file=True)
    if metadata_from is not None:
        _copy_metadata(writer, metadata_from)
    else:
        if tokenizer_folder is None:
            raise ValueError("write_gguf needs a source GGUF (metadata_from) or a tokenizer folder")
        writer.add_name(str(getattr(config, "_name_or_path", "") or architecture))
        _add_hyperparameters(writer, config)
        _add_tokenizer(writer, tokenizer_folder, architecture, int(config.vocab_size))
    writer.add_file_type(_llama_file_type(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in (extra or {}).items():
        writer.add_string(f"mechref.{key}", value)
    target = _ggml_type(file_type)
    if tensors is None:
        items = _gguf_items(config, plain.state_dict().items(), architecture, plain.get_input_embeddings().weight)
    else:
        items = _gguf_items(config, tensors, architecture)
    for name, tensor in items:
        array = tensor.numpy()
        if array.ndim == 1 or file_type == "f32":
            writer.add_tensor(name, array.astype(np.float32))
        elif file_type == "f16":
            writer.add_tensor(name, array.astype(np.float16))
        elif file_type == "q8_0" and array.shape[-1] % 32:
            writer.add_tensor(name, array.astype(np.float16))  # Q8_0 needs rows of whole 32-value blocks
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, target), raw_dtype=target)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def source_gguf(model, workdir: Path) -> Path | None:
    """The GGUF the model was dequantized from, if any: a local ``.gguf`` as it is, the embedded
    model re-assembled (and checked) from its installed parts into ``workdir``."""
    from mechref.model.embedded import assemble_gguf, find_embedded

    kind, _, where = model.source.partition(":")
    if kind == "gguf":
        path = Path(where)
        if not path.is_file():
            raise MechrefError(f"the model's source GGUF {path} is gone; its metadata is needed for a GGUF export")
        return path
    if kind == "embedded":
        embedded = find_embedded(where)
        if embedded is not None:
            return assemble_gguf(embedded, workdir / f"{embedded.name}.gguf")
    return None


def export_gguf(
    model,
    direction: Tensor,
    out_file: str | Path,
    *,
    file_type: str = "bf16",
    strengths=None,
    norm_preserving: bool = False,
    provenance: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the orthogonalized model (any edit variant) as one GGUF file for llama.cpp / Ollama.

    ``out_file`` must not exist, unless ``overwrite`` is given and it is an earlier mechref GGUF
    export. Written atomically: an interrupted export leaves nothing at ``out_file``.
    """
    import tempfile

    from mechref.edits.orthogonalize import (
        check_orthogonalizable,
        edit_description,
        edited_tensors,
        export_config,
        through_post_norms,
    )
    from mechref.framework.io import atomic_path
    from mechref.version import __version__

    out_file = Path(out_file)
    check_target(out_file, overwrite)
    check_orthogonalizable(model.hf_model.config)  # the edit itself first: its message names what works
    check_gguf_exportable(model.hf_model.config, file_type)
    model.require_plain_weights("exporting a GGUF")
    config = export_config(model, torch.float32)
    tensors = edited_tensors(model, direction, strengths, norm_preserving)  # one at a time, as the writer takes them
    info = {
        "mechref_version": __version__,
        "base_model": model.name,
        "base_source": model.source,
        "edit": json.dumps(edit_description(strengths, norm_preserving, through_post_norms(model.hf_model.config))),
        **{k: str(v) for k, v in (provenance or {}).items()},
    }
    with tempfile.TemporaryDirectory(dir=out_file.parent if out_file.parent.exists() else None) as work:
        source = source_gguf(model, Path(work))
        with atomic_path(out_file) as tmp:
            folder = Path(model.folder)
            write_gguf(
                config, tmp, file_type=file_type, tokenizer_folder=folder, metadata_from=source, extra=info, tensors=tensors
            )
    return out_file


def check_target(out_file: Path, overwrite: bool) -> None:
    """A GGUF export writes a new file, or replaces (with ``overwrite``) one mechref wrote."""
    if out_file.suffix != ".gguf":
        raise MechrefError(f"a GGUF export is one file ending in .gguf, got {out_file}")
    if out_file.is_dir():
        raise MechrefError(f"{out_file} is a folder; give the path of the .gguf file to write")
    if not out_file.parent.is_dir():
        raise MechrefError(f"the folder {out_file.parent} does not exist; create it first")
    if out_file.exists():
        if not overwrite:
            raise MechrefError(f"{out_file} exists; pass overwrite to replace an earlier mechref export")
        from gguf import GGUFReader

        try:
            mine = "mechref.mechref_version" in GGUFReader(str(out_file)).fields
        except Exception as error:  # not a GGUF at all
            raise MechrefError(f"{out_file} exists and is not a GGUF mechref wrote; it is left as it is") from error
        if not mine:
            raise MechrefError(f"{out_file} exists and is not a GGUF mechref wrote; it is left as it is")
