"""The refusal direction on disk: the ``direction.safetensors`` that the refusal-direction
analysis writes (the vector plus ``layer``, ``position`` and ``model`` metadata).

>>> import tempfile, torch
>>> from pathlib import Path
>>> from mechref.io import write_tensors
>>> path = Path(tempfile.mkdtemp()) / "direction.safetensors"
>>> _ = write_tensors(path, {"direction": torch.ones(4)}, metadata={"layer": "2", "position": "-1", "model": "m"})
>>> found = load_direction(path)
>>> found.layer, found.position, found.model, tuple(found.direction.shape)
(2, -1, 'm', (4,))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jaxtyping import Float
from torch import Tensor

from mechref.errors import DataFormatError
from mechref.io import read_tensor_metadata, read_tensors

DIRECTION_FILE = "direction.safetensors"


@dataclass
class StoredDirection:
    direction: Float[Tensor, "d_model"]
    layer: int
    position: int
    model: str | None
    path: Path


def load_direction(path: str | Path) -> StoredDirection:
    """Read a direction file, or the one inside a refusal-direction run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / DIRECTION_FILE
    if not path.is_file():
        raise DataFormatError(f"no direction file at {path}; run python -m mechref.analyses.refusal_direction "
                              "(it writes direction.safetensors into its --out folder)")
    meta = read_tensor_metadata(path)
    tensors = read_tensors(path)
    if "direction" not in tensors or "layer" not in meta:
        raise DataFormatError(f"{path} is not a direction file of the refusal-direction analysis (it needs a "
                              "'direction' tensor and 'layer'/'position' metadata)")
    return StoredDirection(direction=tensors["direction"], layer=int(meta["layer"]), position=int(meta.get("position", -1)),
                           model=meta.get("model"), path=path)


def stored_model(path: str | Path) -> str | None:
    """The model a direction file was computed on (None if the file is absent or unlabelled)."""
    path = Path(path)
    path = path / DIRECTION_FILE if path.is_dir() else path
    return read_tensor_metadata(path).get("model") if path.is_file() else None


# A cheaper selection than the analysis's defaults for a direction computed on first use by another
# analysis: half the proxy prompts and half the fully scored candidates (about 2 minutes less on a
# 2-core CPU). Run the refusal-direction analysis yourself for the full selection.
FIRST_USE_SELECTION = ["--proxy-prompts", "4", "--top-k", "4"]


def ensure_direction(model, run_dir: str | Path, model_argv: list[str]) -> StoredDirection:
    """The direction in ``run_dir``, computed there first with the refusal-direction analysis
    (selection only, bundled prompts, :data:`FIRST_USE_SELECTION`) when it is absent or belongs to
    another model. ``model`` is reused; ``model_argv`` are its options (``--model``, ``--dtype``, ...),
    recorded in the run's manifests.
    """
    if stored_model(run_dir) != model.name:
        from mechref.analyses import refusal_direction

        print(f"[0] no refusal direction of {model.name} in {run_dir}; computing it with the refusal-direction "
              "analysis (selection only, bundled prompts) …", flush=True)
        argv = ["--out", str(run_dir), "--skip-eval", *FIRST_USE_SELECTION, *model_argv]
        refusal_direction.run(refusal_direction.build_parser().parse_args(argv), model=model)
    return load_direction(run_dir)


def model_argv(args) -> list[str]:
    """The shared model options of a parsed command line, as arguments for another mechref command."""
    argv = ["--dtype", args.dtype, "--device", args.device]
    if args.model:
        argv += ["--model", args.model]
    if args.system_prompt:
        argv += ["--system-prompt", args.system_prompt]
    return argv
