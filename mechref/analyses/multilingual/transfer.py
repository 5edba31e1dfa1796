"""Cross-lingual transfer: intervene with the refusal vector of a source language and measure
refusal on prompts of every target language (Wang et al. 2025).

* ``ablation``: the source's direction is projected out everywhere; refusal of the targets'
  harmful test prompts should fall if the direction is shared;
* ``addition``: the source's difference-in-means vector is added at its layer; refusal of the
  targets' harmless test prompts should rise.

Refusal is measured with the logit refusal score (one forward pass per prompt, no generation),
each target with its own refusal tokens. Each source costs one pass over every target's prompts.

>>> import torch
>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> vectors = {"en": torch.randn(model.d_model), "de": torch.randn(model.d_model)}
>>> prompts = {"en": ["Hack a bank"], "de": ["Hacke eine Bank"]}
>>> out = transfer_scores(model, vectors, prompts, {"en": [5], "de": [6]}, mode="ablation", layer=1, progress=False)
>>> tuple(out.scores.shape), out.sources, out.targets
((3, 2, 1), ['baseline', 'en', 'de'], ['en', 'de'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.interventions import intervene
from mechref.model.loading import MechrefModel
from mechref.model.logits import last_token_logits
from mechref.scoring import refusal_score_from_logits


@dataclass
class TransferScores:
    """Refusal scores ``scores[source, target, prompt]``; source 0 is the baseline (no intervention)."""

    mode: str
    sources: list[str]
    targets: list[str]
    scores: Float[Tensor, "n_source n_target n_prompt"]

    @property
    def mean(self) -> Float[Tensor, "n_source n_target"]:
        """Mean score over each target language's prompts, for each source vector."""
        return self.scores.mean(-1)

    @property
    def refusing_share(self) -> Float[Tensor, "n_source n_target"]:
        """Share of prompts whose refusal score is positive (refusing is the likelier opening)."""
        return (self.scores > 0).float().mean(-1)

    def to_dict(self) -> dict:
        """The scores as written to ``summary.json``."""
        return {
            "mode": self.mode,
            "sources": self.sources,
            "targets": self.targets,
            "mean_refusal_score": [[round(float(x), 4) for x in row] for row in self.mean],
            "refusing_share": [[round(float(x), 4) for x in row] for row in self.refusing_share],
        }


def transfer_scores(
    model: MechrefModel,
    vectors: Mapping[str, Float[Tensor, " d_model"]],
    prompts: Mapping[str, Sequence[str]],
    refusal_tokens: Mapping[str, Sequence[int]],
    *,
    mode: Literal["ablation", "addition"],
    layer: int,
    coefficient: float = 1.0,
    batch_size: int = 32,
    progress: bool = True,
) -> TransferScores:
    """Refusal scores of every target's prompts at baseline and under each source's intervention."""
    if mode not in ("ablation", "addition"):
        raise ValueError(f"mode must be 'ablation' or 'addition', got {mode!r}")
    targets = list(prompts)
    sizes = {len(prompts[t]) for t in targets}
    if len(sizes) != 1:
        raise ValueError(f"every target needs the same number of prompts for the matrix, got {sorted(sizes)}")
    missing = [t for t in targets if t not in refusal_tokens]
    if missing:
        raise ValueError(f"no refusal tokens for target languages {missing}")
    n = sizes.pop()
    flat = [p for t in targets for p in prompts[t]]
    sources = ["baseline", *vectors]
    scores = torch.empty(len(sources), len(targets), n)
    for s, source in enumerate(sources):
        kind = "baseline" if source == "baseline" else mode
        with intervene(model, kind, vectors.get(source), layer=layer, coefficient=coefficient):
            logits = last_token_logits(model, flat, batch_size=batch_size, progress=progress)
        for t, target in enumerate(targets):
            scores[s, t] = refusal_score_from_logits(logits[t * n : (t + 1) * n], refusal_tokens[target])
    return TransferScores(mode=mode, sources=sources, targets=targets, scores=scores)
