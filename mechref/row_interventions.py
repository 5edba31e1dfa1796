"""Several hook edits of one direction in one batch: each row of the batch in its own condition.

Comparing an edit with the unedited model means generating the same prompts once per condition.
On a CPU a decoding step of 16 rows costs nearly what a step of 48 costs (both mostly read the
weights), so generating three conditions of 16 prompts as one batch of 48 takes little more than
one of them. :class:`RowInterventions` attaches one set of hooks whose effect is chosen per row:
directional ablation on the rows of an ablation condition, the added vector on the rows of an
addition condition, nothing on baseline rows. Row by row it computes exactly what
:func:`mechref.interventions.intervene` computes for that row's condition (``x - 0`` and ``x + 0``
leave a baseline row's activations as they are); a row's reply can still differ in its last bits
from a run of its condition alone, as it can with any change of batch (padding, kernels).

>>> import torch
>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> edits = {"original": HookEdit("baseline"), "ablation": HookEdit("ablation"), "actadd": HookEdit("addition", -1.0, 1)}
>>> replies = generate_ids_per_edit(model, ["Hi", "Write a poem"], torch.ones(model.d_model), edits,
...                                 max_new_tokens=3, progress=False)
>>> sorted(replies), [len(r) for r in replies["ablation"]]
(['ablation', 'actadd', 'original'], [3, 3])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechref.capture import normalize_layers, resid_hook_name
from mechref.framework.vectors import check_vector, unit
from mechref.interventions import InterventionKind, ablation_hook_names
from mechref.model.loading import MechrefModel


@dataclass(frozen=True)
class HookEdit:
    """One condition: ``baseline`` (no edit), ``ablation`` of the direction everywhere, or
    ``addition`` of ``coefficient`` times the direction to the stream entering ``layer``."""

    kind: InterventionKind
    coefficient: float = 1.0
    layer: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("baseline", "ablation", "addition"):
            raise ValueError(f"unknown intervention {self.kind!r}; choose baseline, ablation or addition")
        if self.kind == "addition" and self.layer is None:
            raise ValueError("activation addition needs the layer where the vector is added")


class RowInterventions:
    """Hooks that put row ``i`` of each batch in condition ``conditions[i]`` (an index into ``edits``).

    Call :meth:`start` with a batch's prompt indices before its forward passes and :meth:`select`
    whenever rows leave the batch (:func:`mechref.generation.greedy_decode` does both).
    """

    def __init__(
        self,
        model: MechrefModel,
        direction: Float[Tensor, " d_model"],
        edits: Sequence[HookEdit],
        conditions: Int[Tensor, " n_prompts"],
    ):
        self.model, self.edits = model, list(edits)
        self.conditions = conditions.long()
        self.d_hat = unit(direction, model.d_model)
        self.vector = check_vector(direction, model.d_model, "steering vector")
        self.rows: Tensor | None = None  # the condition of each row of the current batch
        self._ablate = torch.tensor([e.kind == "ablation" for e in self.edits])
        self._layers = sorted({self._layer(e) for e in self.edits if e.kind == "addition"})
        self._cache: dict[tuple, Tensor] = {}

    def _layer(self, edit: HookEdit) -> int:
        assert edit.layer is not None  # HookEdit requires a layer for an addition
        return normalize_layers(self.model, [edit.layer])[0]

    def start(self, indices: Sequence[int] | Tensor) -> None:
        """A batch starts: these rows of the whole prompt list are in it."""
        self.rows = self.conditions[torch.as_tensor(indices, dtype=torch.long)]

    def select(self, keep: Tensor) -> None:
        """Rows whose reply ended leave the batch: keep the rows where ``keep`` is True."""
        if self.rows is None:
            raise RuntimeError("select() before start(): no batch is running")
        self.rows = self.rows[keep.to(self.rows.device)]

    def _current(self, x: Tensor) -> Tensor:
        if self.rows is None or len(self.rows) != x.shape[0]:
            raise RuntimeError(
                f"the batch has {x.shape[0]} rows but the row conditions hold "
                f"{None if self.rows is None else len(self.rows)}: call start() with the batch's prompt indices"
            )
        return self.rows.to(x.device)

    def _tensor(self, name: str, x: Tensor, make) -> Tensor:
        key = (name, x.dtype, x.device)
        if key not in self._cache:
            self._cache[key] = make().to(dtype=x.dtype, device=x.device)
        return self._cache[key]

    def hooks(self) -> list[tuple[str, object]]:
        """The hooks that apply each row's own intervention (ablation, addition) to the rows of the running
        batch."""
        hooks: list[tuple[str, object]] = []
        if bool(self._ablate.any()):

            def project_out(x: Tensor, hook=None) -> Tensor:
                d = self._tensor("d_hat", x, lambda: self.d_hat)
                share = self._tensor("ablate", x, lambda: self._ablate)[self._current(x)]
                return x - ((x @ d) * share.view(-1, *([1] * (x.ndim - 2)))).unsqueeze(-1) * d

            hooks += [(name, project_out) for name in ablation_hook_names(self.model)]
        for layer in self._layers:

            def add(x: Tensor, hook=None, layer: int = layer) -> Tensor:
                def added() -> Tensor:
                    # Each condition's vector as activation addition computes it (float32, then cast).
                    rows = [
                        self.vector * float(e.coefficient)
                        if e.kind == "addition" and self._layer(e) == layer
                        else torch.zeros_like(self.vector)
                        for e in self.edits
                    ]
                    return torch.stack(rows)

                vectors = self._tensor(f"add{layer}", x, added)
                return x + vectors[self._current(x)].view(x.shape[0], *([1] * (x.ndim - 2)), -1)

            hooks.append((resid_hook_name(layer, "resid_pre"), add))
        return hooks


def generate_ids_per_edit(
    model: MechrefModel,
    prompts: Sequence[str],
    direction: Float[Tensor, " d_model"],
    edits: Mapping[str, HookEdit],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, list[list[int]]]:
    """Greedy replies to ``prompts`` under every edit in ``edits``, decoded together (``batch_size``
    counts rows: prompts times edits), as token ids per edit (see :func:`mechref.generation.generate_ids`)."""
    from mechref.generation import generate_ids

    names = list(edits)
    n = len(prompts)
    conditions = torch.arange(len(names)).repeat_interleave(n)
    rows = RowInterventions(model, direction, [edits[name] for name in names], conditions)
    with model.hooks(rows.hooks()):
        ids = generate_ids(
            model,
            [p for _ in names for p in prompts],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
            row_state=rows,
        )
    return {name: ids[i * n : (i + 1) * n] for i, name in enumerate(names)}


__all__ = ["HookEdit", "RowInterventions", "generate_ids_per_edit"]
