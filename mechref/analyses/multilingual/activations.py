"""Activations of every prompt of a language at every layer, gathered in one pass per prompt.

Every multilingual measure reads the residual stream at one token position: refusal vectors
(difference in means of the train prompts), cosine parallelism, silhouette scores and PCA. So
each prompt is run once, all layers are captured at that position, and the result is reused.

>>> from mechref.testing import tiny_model
>>> from mechref.analyses.multilingual.data import load_language_sets
>>> model = tiny_model("qwen2")
>>> acts = gather_activations(model, load_language_sets(["de"], n_train=4, n_test=2)["de"], progress=False)
>>> {k: tuple(v.shape) for k, v in acts.items()}["harmful_train"]   # [prompt, layer, d_model]
(4, 3, 64)
>>> tuple(refusal_vector(acts).shape)
(3, 64)
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from mechref.analyses.multilingual.data import LanguageSets
from mechref.capture import capture_residual
from mechref.model.loading import MechrefModel

#: The four prompt sets of a language, in the order their activations are gathered.
SET_NAMES = ("harmful_train", "harmless_train", "harmful_test", "harmless_test")


def gather_activations(
    model: MechrefModel, sets: LanguageSets, *, position: int = -1, batch_size: int = 32, progress: bool = True
) -> dict[str, Float[Tensor, "n_prompt n_layer d_model"]]:
    """The residual stream entering every layer at ``position`` for each of :data:`SET_NAMES` (float32)."""
    prompts: list[str] = []
    bounds: dict[str, tuple[int, int]] = {}
    for name in SET_NAMES:
        texts = getattr(sets, name).instructions
        bounds[name] = (len(prompts), len(prompts) + len(texts))
        prompts += texts
    # One capture for all four sets: batches are formed by length across them, each prompt runs once.
    acts = capture_residual(
        model,
        prompts,
        layers=None,
        positions=[position],
        batch_size=batch_size,
        progress=progress,
        desc=f"activations [{sets.language}]",
    )[:, 0].float()
    return {name: acts[start:end] for name, (start, end) in bounds.items()}


def refusal_vector(acts: dict[str, Tensor]) -> Float[Tensor, "n_layer d_model"]:
    """Difference in means, harmful minus harmless train prompts, at every layer."""
    return (acts["harmful_train"].double().mean(0) - acts["harmless_train"].double().mean(0)).float()
