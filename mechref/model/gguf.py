"""Dequantize a GGUF file into a Hugging Face folder one tensor at a time.

``transformers`` can load a GGUF directly, but it dequantizes every tensor into memory first and
then builds the model: for a 1.5B model that is two float32 copies of the weights at once
(8.65 GiB at peak on the embedded model). Here each tensor is dequantized, renamed and converted
to the dtype asked for on its own, and written out in safetensors shards of bounded size, so the
peak is one shard plus the largest tensor, whatever the model's size.

The renaming and the per-architecture fix-ups (the Q/K row permutation llama.cpp applies to
Llama-style models, Gemma's norm offset, …) are ``transformers``' own, so the folder holds
exactly the tensors ``AutoModelForCausalLM.from_pretrained(..., gguf_file=...)`` would build.

>>> shard_name(0, 3)
'model-00001-of-00003.safetensors'
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from mechref.framework.io import write_json

logger = logging.getLogger(__name__)

SHARD_BYTES = 512 * 2**20  # one shard held in memory at a time


def shard_name(index: int, total: int) -> str:
    """The file name ``transformers`` expects of shard ``index`` (0-based) of ``total``."""
    return f"model-{index + 1:05d}-of-{total:05d}.safetensors"


def gguf_config(gguf_path: Path):
    """The ``transformers`` config described by a GGUF's metadata (no tensor is read)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # The weights written here are plain floating point; a GGUF quantization config would make
    # transformers try to dequantize them again when the folder is loaded.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


def _processor_and_names(gguf_path: Path, reader, config) -> tuple[Any, dict[str, str], dict]:
    """The GGUF architecture's tensor processor, the GGUF → Hugging Face name map (computed on a
    model with no storage, on the ``meta`` device) and the parsed metadata, as ``transformers``
    has them for a full load."""
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
        read_field,
    )

    parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=False)
    architecture = read_field(reader, "general.architecture")[0]
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return processor, get_gguf_hf_weights_map(skeleton, processor), parsed


def iter_dequantized(gguf_path: Path, config, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(hugging_face_name, tensor)`` for every tensor of the GGUF that the model uses, each
    dequantized, fixed up and cast to ``dtype`` on its own."""
    from gguf import GGUFReader, dequantize

    reader = GGUFReader(str(gguf_path))  # memory-mapped: a tensor's bytes are read when it is
    processor, name_map, parsed = _processor_and_names(gguf_path, reader, config)
    # Some processors (mixture-of-experts) place tensors straight into this dict instead of returning them.
    placed: dict[str, torch.Tensor] = {}
    parsed["tensors"] = placed
    for tensor in tqdm(reader.tensors, desc="dequantizing", unit="tensor", leave=False):
        weights = dequantize(tensor.data, tensor.tensor_type)
        result = processor.process(weights=weights, name=tensor.name, tensor_key_mapping=name_map, parsed_parameters=parsed)
        del weights
        if result.name in name_map:
            array = np.ascontiguousarray(result.weights)
            if not array.flags.writeable:  # an unquantized tensor is a view of the read-only file
                array = array.copy()
            yield name_map[result.name], torch.from_numpy(array).to(dtype)
        while placed:
            name, value = placed.popitem()
            yield name, value.to(dtype)
        _forget_read_pages(reader)


def _forget_read_pages(reader) -> None:
    """Drop the file's pages read so far from this process's resident memory: the mapping is
    read-only, so they come back from the file (or the page cache) if read again. Without it a
    GGUF read whole counts its full size in the process's memory until the reader is closed."""
    import mmap

    handle = getattr(reader.data, "_mmap", None)
    if handle is not None and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


def write_gguf_weights(gguf_path: Path, folder: Path, config, dtype: torch.dtype, shard_bytes: int = SHARD_BYTES) -> dict:
    """Write a GGUF's weights into ``folder`` as safetensors shards of at most about ``shard_bytes``
    each, with ``model.safetensors.index.json``; returns the index."""
    from safetensors.torch import save_file

    current: dict[str, torch.Tensor] = {}
    current_bytes = 0
    written: list[str] = []
    weight_map: dict[str, int] = {}
    total = 0

    def flush() -> None:
        nonlocal current, current_bytes
        if not current:
            return
        # Shards are numbered once the count is known: write under a provisional name, rename after.
        path = folder / f"shard-{len(written):05d}.tmp"
        save_file(current, str(path), metadata={"format": "pt"})
        written.append(path.name)
        current, current_bytes = {}, 0
        gc.collect()

    for name, tensor in iter_dequantized(gguf_path, config, dtype):
        size = tensor.numel() * tensor.element_size()
        if current and current_bytes + size > shard_bytes:
            flush()
        current[name] = tensor
        current_bytes += size
        total += size
        weight_map[name] = len(written)
    flush()
    names = [shard_name(i, len(written)) for i in range(len(written))]
    for provisional, final in zip(written, names):
        (folder / provisional).rename(folder / final)
    index = {"metadata": {"total_size": total}, "weight_map": {k: names[i] for k, i in sorted(weight_map.items())}}
    write_json(folder / "model.safetensors.index.json", index)
    return index


def convert_gguf(gguf_path: Path, folder: Path, dtype: torch.dtype, shard_bytes: int = SHARD_BYTES) -> None:
    """Write a complete Hugging Face folder (config, generation config, tokenizer, weight shards in
    ``dtype``) for a GGUF into ``folder``, which must exist and be empty."""
    from transformers import AutoTokenizer, GenerationConfig

    config = gguf_config(gguf_path)
    config.dtype = dtype
    write_gguf_weights(gguf_path, folder, config, dtype, shard_bytes)
    config.save_pretrained(str(folder))
    GenerationConfig.from_model_config(config).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name).save_pretrained(str(folder))
