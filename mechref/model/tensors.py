"""The tensors of a Hugging Face model folder, read one at a time.

>>> import tempfile
>>> from mechref.testing import tiny_model_folder
>>> tensors = FolderTensors(tiny_model_folder(tempfile.mkdtemp()))
>>> tensors.get("model.embed_tokens.weight", torch.float64).dtype
torch.float64
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

# safetensors' names of the dtypes it stores.
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


# Conversions of larger tensors go this many bytes (of the stored tensor) at a time.
CHUNK_BYTES = 64 * 2**20


class FolderTensors:
    """The tensors of a Hugging Face folder's safetensors files, read one at a time (a copy of that
    tensor only), as ``from_pretrained(folder, dtype=...)`` would give them: floating-point tensors in
    ``dtype``, the others as stored.

    >>> import tempfile
    >>> from mechref.testing import tiny_model_folder
    >>> folder = tiny_model_folder(tempfile.mkdtemp())
    >>> tensors = FolderTensors(folder)
    >>> tensors.get("model.embed_tokens.weight", torch.float64).dtype
    torch.float64
    """

    def __init__(self, folder: str | Path):
        from safetensors import safe_open

        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (self.folder / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            files = []
        self.where: dict[str, str] = {}
        for file in files:
            with safe_open(str(self.folder / file), framework="pt") as handle:
                self.where.update(dict.fromkeys(handle.keys(), file))

    def shape_and_dtype(self, name: str, dtype: torch.dtype) -> tuple[tuple[int, ...], torch.dtype]:
        """The shape of tensor ``name`` and the dtype :meth:`get` gives it, without reading it."""
        from safetensors import safe_open

        with safe_open(str(self.folder / self.where[name]), framework="pt") as handle:
            piece = handle.get_slice(name)
            shape, stored = tuple(int(n) for n in piece.get_shape()), SAFETENSORS_DTYPES[piece.get_dtype()]
        return shape, dtype if stored.is_floating_point else stored

    def get(self, name: str, dtype: torch.dtype) -> Tensor:
        """Tensor ``name`` read from its file (a copy of it alone), floating point in ``dtype``.

        A large tensor stored in another dtype is converted ``CHUNK_BYTES`` of it at a time, the
        file closed between chunks: the file's pages of the whole tensor (0.9 GiB for the embedded
        model's embedding in float32) are never mapped beside the converted copy. The values are
        the same (a conversion is element by element)."""
        from safetensors import safe_open

        path = str(self.folder / self.where[name])
        with safe_open(path, framework="pt") as handle:
            piece = handle.get_slice(name)
            shape, stored = [int(n) for n in piece.get_shape()], SAFETENSORS_DTYPES[piece.get_dtype()]
            row = stored.itemsize * math.prod(shape[1:]) if shape else 0
            if not stored.is_floating_point or stored == dtype or not shape or row * shape[0] <= CHUNK_BYTES:
                tensor = handle.get_tensor(name)
                return tensor.to(dtype) if tensor.is_floating_point() else tensor
        out = torch.empty(shape, dtype=dtype)
        rows = max(1, CHUNK_BYTES // max(row, 1))
        for start in range(0, shape[0], rows):
            with safe_open(path, framework="pt") as handle:
                out[start : start + rows] = handle.get_slice(name)[start : start + rows]
        return out
