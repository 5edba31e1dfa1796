"""How strongly a weight edit acts at each layer: a small parametric kernel over layers.

The paper's orthogonalization removes the direction from every writer in full. A softer edit
removes a share ``w`` of it, ``W <- W - w r r^T W``, with ``w`` peaking at one layer and falling
off linearly to a minimum over a width, separately for the attention and the MLP outputs (the
shape heretic searches over). ``w = 1`` everywhere is the paper's edit.

>>> kernel = LayerKernel(peak=2.0, width=2.0, min_weight=0.2, max_weight=1.0)
>>> [round(w, 2) for w in kernel.weights(5)]
[0.2, 0.6, 1.0, 0.6, 0.2]
>>> EditStrengths.full(3).attention
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LayerKernel:
    """``max_weight`` at layer ``peak`` (may fall between layers), falling linearly to
    ``min_weight`` at ``width`` layers away and staying there."""

    peak: float
    width: float
    min_weight: float = 0.0
    max_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"the kernel's width must be positive, got {self.width}")
        if not 0.0 <= self.min_weight <= self.max_weight:
            raise ValueError(f"the kernel needs 0 <= min_weight <= max_weight, got {self.min_weight} and {self.max_weight}")

    def weights(self, n_layers: int) -> list[float]:
        """Strength at each of ``n_layers`` layers: ``max_weight`` at the peak, falling linearly to
        ``min_weight`` over ``width`` layers."""
        falloff = [max(0.0, 1.0 - abs(layer - self.peak) / self.width) for layer in range(n_layers)]
        return [self.min_weight + (self.max_weight - self.min_weight) * f for f in falloff]


@dataclass(frozen=True)
class EditStrengths:
    """The share of the direction removed from each writer: the token embedding, and each layer's
    attention and MLP output."""

    attention: tuple[float, ...]
    mlp: tuple[float, ...]
    embedding: float = 1.0

    def __post_init__(self) -> None:
        if len(self.attention) != len(self.mlp):
            raise ValueError(f"one attention and one MLP strength per layer: got {len(self.attention)} and {len(self.mlp)}")
        for w in (*self.attention, *self.mlp, self.embedding):
            if not 0.0 <= w <= 1.5:
                raise ValueError(f"edit strengths must be in [0, 1.5] (1 removes the direction), got {w}")

    @classmethod
    def full(cls, n_layers: int) -> EditStrengths:
        """The paper's edit: the direction removed in full everywhere."""
        return cls(attention=(1.0,) * n_layers, mlp=(1.0,) * n_layers)

    @classmethod
    def from_kernels(cls, n_layers: int, attention: LayerKernel, mlp: LayerKernel, embedding: float = 1.0) -> EditStrengths:
        """Strengths from one kernel for the attention writers and one for the MLP writers."""
        return cls(tuple(attention.weights(n_layers)), tuple(mlp.weights(n_layers)), embedding)

    def per_writer(self) -> list[float]:
        """Strengths in the order of :func:`~mechref.edits.orthogonalize.writer_module_names`
        (attention then MLP output of each layer)."""
        return [w for pair in zip(self.attention, self.mlp) for w in pair]

    def is_full(self) -> bool:
        """Whether every strength is 1 (the paper's full orthogonalization)."""
        return all(w == 1.0 for w in (*self.attention, *self.mlp, self.embedding))

    def to_dict(self) -> dict:
        """The strengths as lists, for JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
