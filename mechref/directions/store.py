"""The refusal direction on disk: the ``direction.safetensors`` that the refusal-direction
analysis writes (the vector plus ``layer``, ``position`` and ``model`` metadata).

>>> import tempfile, torch
>>> from pathlib import Path
>>> from mechref.framework.io import write_tensors
>>> path = Path(tempfile.mkdtemp()) / "direction.safetensors"
>>> _ = write_tensors(path, {"direction": torch.ones(4)}, metadata={"layer": "2", "position": "-1", "model": "m"})
>>> found = load_direction(path)
>>> found.layer, found.position, found.model, tuple(found.direction.shape)
(2, -1, 'm', (4,))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.errors import DataFormatError
from mechref.framework.checks import check_layer
from mechref.framework.io import read_tensor_metadata, read_tensors
from mechref.framework.ownership import check_output_folder
from mechref.framework.vectors import check_vector
from mechref.model.loading import MechrefModel

DIRECTION_FILE = "direction.safetensors"


@dataclass
class StoredDirection:
    direction: Float[Tensor, " d_model"]
    layer: int
    position: int
    model: str | None
    path: Path
    metadata: dict[str, str] = field(default_factory=dict)


def load_direction(path: str | Path) -> StoredDirection:
    """Read a direction file, or the one inside a refusal-direction run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / DIRECTION_FILE
    if not path.is_file():
        raise DataFormatError(
            f"no direction file at {path}; run mechref refusal_direction (it writes direction.safetensors into its --out folder)"
        )
    try:
        meta = read_tensor_metadata(path)
        tensors = read_tensors(path)
    except Exception as error:  # safetensors raises its own error types for a damaged file
        raise DataFormatError(f"{path} is not a readable safetensors file ({type(error).__name__}: {error})") from error
    if "direction" not in tensors or "layer" not in meta:
        raise DataFormatError(
            f"{path} is not a direction file of the refusal-direction analysis (it needs a "
            "'direction' tensor and 'layer'/'position' metadata)"
        )
    direction = tensors["direction"]
    if not direction.is_floating_point() or direction.ndim != 1:
        raise DataFormatError(
            f"{path}: the direction must be a 1-D floating-point vector, "
            f"got dtype {direction.dtype} shape {tuple(direction.shape)}"
        )
    if not torch.isfinite(direction).all() or not direction.abs().sum() > 0:
        raise DataFormatError(f"{path}: the direction holds NaN, infinite values or only zeros; recompute it")
    try:
        layer, position = int(meta["layer"]), int(meta.get("position", -1))
    except ValueError as error:
        raise DataFormatError(f"{path}: the 'layer' and 'position' metadata must be integers ({error})") from error
    if layer < 0:
        raise DataFormatError(f"{path}: the 'layer' metadata is negative ({layer})")
    return StoredDirection(
        direction=direction, layer=layer, position=position, model=meta.get("model"), path=path, metadata=dict(meta)
    )


def direction_mismatches(stored: StoredDirection, model: MechrefModel) -> list[str]:
    """How the model a direction was computed on differs from ``model`` (dtype, system prompt, chat
    template, mechref code), one sentence each; empty when nothing differs or the file does not say.

    A direction stays usable across these (it is one vector), but a number computed with it is
    then not the number of a fresh run: the analyses print these and record them in their summary.
    """
    from mechref.framework.io import fingerprint
    from mechref.framework.runs import code_version

    meta, identity, out = stored.metadata, model.identity(), []
    if stored.model is not None and stored.model != model.name:
        out.append(f"it was computed on model {stored.model}, not {model.name}")
    if "dtype" in meta and meta["dtype"] != identity["dtype"]:
        out.append(f"it was computed in {meta['dtype']}, the model now runs in {identity['dtype']}")
    if "system_prompt" in meta and meta["system_prompt"] != fingerprint(identity["system_prompt"]):
        out.append("it was computed with another system prompt")
    if "chat_template" in meta and meta["chat_template"] != str(identity["chat_template"]):
        out.append("it was computed with another chat template")
    if "code_version" in meta and meta["code_version"] != code_version():
        out.append(f"it was computed by other mechref code ({meta['code_version']}, now {code_version()})")
    return [f"direction {stored.path}: {line}" for line in out]


def stored_model(path: str | Path) -> str | None:
    """The model a direction file was computed on (None if the file is absent or unlabelled)."""
    path = Path(path)
    path = path / DIRECTION_FILE if path.is_dir() else path
    return read_tensor_metadata(path).get("model") if path.is_file() else None


def check_direction_source(direction: str | Path | None, direction_run: str | Path) -> None:
    """Before the model loads: the ``--direction`` file reads as a direction, or the run folder
    where one is computed on first use can be written."""
    if direction is not None:
        load_direction(direction)
    else:
        check_output_folder(direction_run)


def check_direction_fit(model: MechrefModel, direction: str | Path | None, layer: int | None) -> None:
    """With the model: the ``--layer`` override exists, and the ``--direction`` file's vector has
    the model's width and its layer exists (when no override replaces it)."""
    if layer is not None:
        check_layer(layer, model.n_layers)
    if direction is not None:
        stored = load_direction(direction)
        check_vector(stored.direction, model.d_model, what=f"direction in {direction}")
        if layer is None:
            check_layer(stored.layer, model.n_layers, flag="--direction (its layer)")
