"""Activation addition as a llama.cpp control vector (``--control-vector FILE``, or
``--control-vector-scaled FILE S``; Ollama builds on the same runtime).

A control vector file is a GGUF of architecture ``controlvector`` whose F32 tensors
``direction.N`` are added, at every position, to the output of block ``N`` (0-based, ``N >= 1``).
mechref's :func:`~mechref.interventions.activation_addition` adds ``coefficient * vector`` to the
stream *entering* block ``L``, which is the output of block ``L - 1``: the file holds that vector
as ``direction.{L-1}``. The stream entering blocks 0 and 1 cannot be reached this way, and is
refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from jaxtyping import Float
from torch import Tensor

from mechref.edits.gguf import GGUF_ARCHITECTURES, check_target
from mechref.errors import MechrefError
from mechref.framework.vectors import check_vector


def control_vector_tensor_name(layer: int) -> str:
    """The tensor that adds to the stream entering block ``layer``.

    >>> control_vector_tensor_name(14)
    'direction.13'
    """
    if layer < 2:
        raise MechrefError(
            f"llama.cpp adds control vectors to the output of block 1 and later, so the stream entering block {layer} "
            "cannot be reached; choose layer 2 or later"
        )
    return f"direction.{layer - 1}"


def export_control_vector(
    model,
    vector: Float[Tensor, " d_model"],
    layer: int,
    out_file: str | Path,
    *,
    coefficient: float = 1.0,
    provenance: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``coefficient * vector`` added at the stream entering ``layer`` as a llama.cpp control
    vector file (atomically; ``out_file`` new, or an earlier mechref export with ``overwrite``)."""
    from gguf import GGUFWriter

    from mechref.framework.io import atomic_path
    from mechref.version import __version__

    out_file = Path(out_file)
    check_target(out_file, overwrite)
    if not 0 <= layer < model.n_layers:
        raise MechrefError(f"layer {layer} does not exist: the model has layers 0..{model.n_layers - 1}")
    name = control_vector_tensor_name(layer)
    values = (check_vector(vector, model.d_model, "steering vector").double() * float(coefficient)).float().cpu().numpy()
    model_type = str(getattr(model.hf_model.config, "model_type", ""))
    info = {
        "mechref_version": __version__,
        "base_model": model.name,
        "layer": str(layer),
        "coefficient": repr(float(coefficient)),
        **{k: str(v) for k, v in (provenance or {}).items()},
    }
    with atomic_path(out_file) as tmp:
        writer = GGUFWriter(str(tmp), "controlvector")
        writer.add_string("controlvector.model_hint", GGUF_ARCHITECTURES.get(model_type, model_type))
        writer.add_uint32("controlvector.layer_count", 1)
        for key, value in info.items():
            writer.add_string(f"mechref.{key}", value)
        writer.add_string("mechref.edit", json.dumps({"kind": "activation_addition", "layer": layer}))
        writer.add_tensor(name, np.ascontiguousarray(values, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out_file
