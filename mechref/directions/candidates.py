"""Difference-in-means candidate directions, one per (post-instruction position, layer).

For each candidate, ``r[pos, layer] = mean(harmful activations) - mean(harmless activations)``
of the residual stream entering ``layer`` at ``pos`` (Arditi et al. 2024, section 2.3). The
means are running float64 sums over batches: nothing but the sums is kept in memory.

>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> cands = extract_candidates(model, ["Build a bomb", "Hack a bank"], ["Bake bread", "Sing a song"], progress=False)
>>> tuple(cands.directions.shape)   # [n_pos, n_layer, d_model]
(5, 3, 64)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from jaxtyping import Float
from torch import Tensor

from mechref.capture import capture_residual
from mechref.framework.io import fingerprint, read_json, read_tensors, write_json, write_tensors
from mechref.model.loading import MechrefModel
from mechref.version import __version__


@dataclass
class CandidateDirections:
    """Candidate refusal directions and the means they came from.

    ``directions[i, l]`` is the candidate at end-relative position ``positions[i]`` and layer ``l``.
    """

    directions: Float[Tensor, "n_pos n_layer d_model"]
    mean_harmful: Float[Tensor, "n_pos n_layer d_model"]
    mean_harmless: Float[Tensor, "n_pos n_layer d_model"]
    positions: list[int]
    manifest: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        """Number of layers the candidates span."""
        return self.directions.shape[1]

    def get(self, position: int, layer: int) -> Float[Tensor, " d_model"]:
        """The candidate at end-relative ``position`` and ``layer``, as float32."""
        return self.directions[self.positions.index(position), layer].float()

    def save(self, path: str | Path) -> None:
        """Write ``<path>.safetensors`` and its manifest ``<path>.json``, both atomically."""
        path = Path(path)
        write_tensors(
            path.with_suffix(".safetensors"),
            {
                "directions": self.directions,
                "mean_harmful": self.mean_harmful,
                "mean_harmless": self.mean_harmless,
            },
        )
        write_json(path.with_suffix(".json"), {**self.manifest, "positions": self.positions})

    @classmethod
    def load(cls, path: str | Path) -> CandidateDirections:
        """Candidates saved by :meth:`save` at ``path`` (its ``.safetensors`` and ``.json``)."""
        path = Path(path)
        tensors = read_tensors(path.with_suffix(".safetensors"))
        manifest = read_json(path.with_suffix(".json"))
        return cls(tensors["directions"], tensors["mean_harmful"], tensors["mean_harmless"], manifest["positions"], manifest)


def extract_candidates(
    model: MechrefModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    positions: Sequence[int] | str = "post_instruction",
    batch_size: int = 16,
    progress: bool = True,
) -> CandidateDirections:
    """Difference-in-means directions at every layer and each of ``positions``."""
    means = {}
    for label, prompts in (("harmful", harmful), ("harmless", harmless)):
        means[label] = capture_residual(
            model,
            prompts,
            layers=None,
            positions=positions,
            kind="resid_pre",
            reduce="mean",
            batch_size=batch_size,
            progress=progress,
            desc=f"means ({label})",
        )
    pos = model.chat.post_instruction_positions if isinstance(positions, str) else [int(p) for p in positions]
    directions = (means["harmful"] - means["harmless"]).float()
    manifest = {
        "mechref_version": __version__,
        "model": model.name,
        "source": model.source,
        "dtype": str(model.dtype).removeprefix("torch."),
        "n_harmful": len(harmful),
        "n_harmless": len(harmless),
        "harmful_fingerprint": fingerprint(list(harmful)),
        "harmless_fingerprint": fingerprint(list(harmless)),
    }
    return CandidateDirections(directions, means["harmful"].float(), means["harmless"].float(), pos, manifest)
