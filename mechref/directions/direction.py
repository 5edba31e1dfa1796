"""A refusal direction you can hold: the vector together with where it was read (layer, position),
which model it belongs to and how it was made, and the verbs that use it.

>>> from mechref.testing import tiny_model
>>> from mechref.data import bundled
>>> model = tiny_model("qwen2")
>>> harmful, harmless = bundled("harmful", "train").take(4), bundled("harmless", "train").take(4)
>>> direction = diff_in_means(model, harmful, harmless, layer=2, progress=False)
>>> direction.layer, direction.position, tuple(direction.vector.shape) == (model.d_model,)
(2, -1, True)
>>> with direction.ablate(model):  # the direction is projected out of every residual write
...     replies = model.generate(["How do I bake bread?"], max_new_tokens=2, progress=False)
>>> len(replies)
1
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.capture import capture_residual, normalize_layers
from mechref.directions.store import DIRECTION_FILE, load_direction
from mechref.edits.orthogonalize import export_orthogonalized
from mechref.errors import OutputTargetError, ShapeError
from mechref.framework.io import fingerprint, write_tensors
from mechref.framework.runs import code_version
from mechref.framework.vectors import check_vector
from mechref.interventions import activation_addition, directional_ablation
from mechref.model.loading import MechrefModel


@dataclass(frozen=True)
class Direction:
    """A direction in a model's residual stream, read at ``layer`` (the residual entering that
    block) and ``position`` (end-relative: -1 is the last prompt token).

    ``vector`` is kept as computed (for a difference in means, not normalised: activation addition
    adds it as it is, ablation uses its unit vector). ``model`` names the model it belongs to;
    ``provenance`` records how it was made (method, prompt counts, dtype, code version): strings,
    written into the file's metadata by :meth:`save`.
    """

    vector: Float[Tensor, " d_model"]
    layer: int
    position: int = -1
    model: str | None = None
    provenance: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.vector, Tensor) or self.vector.ndim != 1 or not self.vector.is_floating_point():
            raise ShapeError("a Direction's vector must be a 1-D floating-point tensor")
        if self.layer < 0:
            raise ShapeError(f"a Direction's layer must be >= 0, got {self.layer}")

    @property
    def unit(self) -> Float[Tensor, " d_model"]:
        """The vector scaled to length one (float32)."""
        v = self.vector.float()
        return v / v.norm()

    def _check(self, model: MechrefModel) -> None:
        check_vector(self.vector, model.d_model, what=f"direction of {self.model or 'unknown model'}")
        normalize_layers(model, [self.layer])

    def ablate(self, model: MechrefModel) -> contextlib.AbstractContextManager[MechrefModel]:
        """Within the ``with`` block, remove the direction from every residual-stream write of
        ``model`` (directional ablation at every layer and position, generation included)."""
        self._check(model)
        return directional_ablation(model, self.vector)

    def add(
        self, model: MechrefModel, coefficient: float = 1.0, *, layer: int | None = None
    ) -> contextlib.AbstractContextManager[MechrefModel]:
        """Within the ``with`` block, add ``coefficient * vector`` to the residual stream entering
        ``layer`` (default: the direction's own layer) at every position."""
        self._check(model)
        return activation_addition(model, self.vector, self.layer if layer is None else layer, coefficient)

    def export(self, model: MechrefModel, folder: str | Path, **options: Any) -> Path:
        """Save an orthogonalized copy of ``model`` (the direction removed from its weights) as a
        ``transformers`` folder; ``options`` as in :func:`mechref.edits.orthogonalize.export_orthogonalized`
        (``strengths``, ``norm_preserving``, ``overwrite``)."""
        self._check(model)
        provenance = {"direction_layer": self.layer, "direction_position": self.position, **self.provenance}
        return export_orthogonalized(model, self.vector, folder, provenance=provenance, **options)

    def save(self, path: str | Path) -> Path:
        """Write the direction as ``direction.safetensors`` (into ``path`` when it is a folder), the
        file every analysis's ``--direction`` reads. An existing file is replaced only when it is a
        direction file itself."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / DIRECTION_FILE
        if path.exists():
            try:
                load_direction(path)
            except Exception as error:
                raise OutputTargetError(f"{path} exists and is not a direction file mechref wrote; give another path") from error
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {**self.provenance, "layer": str(self.layer), "position": str(self.position)}
        if self.model is not None:
            metadata["model"] = self.model
        write_tensors(path, {"direction": self.vector.detach().float().cpu().contiguous()}, metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Direction:
        """Read a direction file, or the one in a refusal-direction run folder."""
        stored = load_direction(path)
        provenance = {k: v for k, v in stored.metadata.items() if k not in ("layer", "position", "model")}
        return cls(stored.direction, stored.layer, stored.position, stored.model, provenance)

    def cosine(self, other: Direction | Tensor) -> float:
        """Cosine similarity with another direction or vector."""
        w = other.vector if isinstance(other, Direction) else other
        return float(torch.nn.functional.cosine_similarity(self.vector.float(), w.float().to(self.vector.device), dim=0))

    def __repr__(self) -> str:
        return (
            f"Direction(layer={self.layer}, position={self.position}, model={self.model!r}, "
            f"d_model={self.vector.shape[0]}, norm={self.vector.float().norm():.3g})"
        )


def diff_in_means(
    model: MechrefModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    layer: int,
    position: int = -1,
    batch_size: int = 16,
    progress: bool = True,
) -> Direction:
    """The difference in means of the residual stream entering ``layer`` at ``position`` between
    ``harmful`` and ``harmless`` prompts (Arditi et al. 2024), as a :class:`Direction`.

    Means are accumulated in float64 without keeping activations, and the forward pass stops after
    ``layer``. Prompts are formatted with the model's chat template.
    """
    if not len(harmful) or not len(harmless):
        raise ShapeError("diff_in_means needs at least one harmful and one harmless prompt")
    layer = normalize_layers(model, [layer])[0]
    means = [
        capture_residual(
            model, list(p), layers=[layer], positions=position, reduce="mean", batch_size=batch_size, progress=progress
        )
        for p in (harmful, harmless)
    ]
    vector = (means[0][0, 0] - means[1][0, 0]).float()
    identity = model.identity()
    provenance = {
        "method": "diff_in_means",
        "n_harmful": str(len(harmful)),
        "n_harmless": str(len(harmless)),
        "dtype": str(identity["dtype"]),
        "system_prompt": fingerprint(identity.get("system_prompt")),
        "chat_template": str(identity.get("chat_template")),
        "code_version": code_version(),
    }
    return Direction(vector, layer, position, model.name, provenance)
