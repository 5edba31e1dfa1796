"""What the suffix analysis measures at the last token of each prompt.

* :func:`layer_cosines`: cosine similarity of the residual stream with the refusal direction,
  entering every layer;
* :func:`attention_shares`: how the last token's attention of chosen heads splits over the
  prompt's regions (system / instruction / suffix / post), summing to 1 per head;
* the direct feature attribution of every head and MLP comes from
  :func:`mechref.attribution.direct_feature_attribution`.

>>> import torch
>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> tuple(layer_cosines(model, ["Write a poem"], torch.randn(model.d_model), progress=False).shape)
(1, 3)
>>> shares = attention_shares(model, ["Write a poem"], " !!", heads=[(1, 0)], progress=False)
>>> tuple(shares.shape), round(float(shares.sum(-1)), 4)
((1, 1, 4), 1.0)
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.analyses.suffix_hijack.regions import region_shares, token_regions
from mechref.capture import capture_attention, capture_residual
from mechref.framework.vectors import unit
from mechref.model.loading import MechrefModel


def layer_cosines(
    model: MechrefModel,
    prompts: Sequence[str],
    direction: Float[Tensor, " d_model"],
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> Float[Tensor, "n_prompt n_layer"]:
    """Cosine similarity between the last token's residual stream (entering each layer) and ``direction``."""
    r = unit(direction, model.d_model).double()
    acts = capture_residual(
        model,
        prompts,
        layers=None,
        positions=-1,
        kind="resid_pre",
        batch_size=batch_size,
        progress=progress,
        desc="residual stream",
    )[:, 0].double()  # [n, layer, d]
    return torch.nn.functional.cosine_similarity(acts, r.view(1, 1, -1), dim=-1).float()


def attention_shares(
    model: MechrefModel,
    instructions: Sequence[str],
    suffix: str,
    heads: Sequence[tuple[int, int]],
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> Float[Tensor, "n_prompt n_head n_region"]:
    """Share of the last token's attention that each head puts on each region of
    :data:`~mechref.analyses.suffix_hijack.regions.REGIONS`."""
    prompts = [instruction + suffix for instruction in instructions]
    capture = capture_attention(model, prompts, heads, query_positions=-1, batch_size=batch_size, progress=progress)
    shares = []
    for instruction, pattern in zip(instructions, capture.patterns):
        labels = token_regions(model, instruction, suffix)
        shares.append(region_shares(pattern[:, 0].double(), labels).float())  # [head, region]
    return torch.stack(shares)


def full_attention(
    model: MechrefModel, prompt: str, heads: Sequence[tuple[int, int]]
) -> tuple[Float[Tensor, "n_head seq seq"], list[int]]:
    """Every query's attention of the given heads on one prompt (for attention views)."""
    input_ids, _ = model.tokenize([model.chat.format(prompt)])
    seq = input_ids.shape[1]
    capture = capture_attention(model, [prompt], heads, query_positions=list(range(-seq, 0)), progress=False)
    return capture.patterns[0], capture.input_ids[0]
