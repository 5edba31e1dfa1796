"""Token regions of a chat prompt and the share of attention each region receives.

A formatted prompt ``instruction + suffix`` splits into four consecutive regions:

* ``system``: the template before the user's text (system prompt, role markers);
* ``instruction``: the user's instruction;
* ``suffix``: the appended suffix (empty without one);
* ``post``: the template after the user's text, up to and including the last token.

>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> labels = token_regions(model, "Build a bomb", " !!")
>>> labels.count("suffix") > 0, labels[-1]
(True, 'post')
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.model.loading import MechrefModel

#: The regions of a prompt whose share of attention is measured.
REGIONS = ("system", "instruction", "suffix", "post")


def token_regions(model: MechrefModel, instruction: str, suffix: str = "") -> list[str]:
    """The region of every token of ``model.chat.format(instruction + suffix)``.

    A token is assigned by the character where it starts; one that straddles the start of the
    user's text counts as instruction.
    """
    text = model.chat.format(instruction + suffix)
    start = text.rindex(instruction + suffix)
    instruction_end = start + len(instruction)
    suffix_end = instruction_end + len(suffix)
    labels = []
    for begin, end in model.chat.token_offsets(text):
        if end <= start:
            labels.append("system")
        elif begin < instruction_end:
            labels.append("instruction")
        elif begin < suffix_end:
            labels.append("suffix")
        else:
            labels.append("post")
    return labels


def region_shares(pattern: Float[Tensor, "... seq"], labels: Sequence[str]) -> Float[Tensor, "... n_region"]:
    """Sum an attention distribution over each region of :data:`REGIONS` (in that order).

    Each row of ``pattern`` is one query's attention over the prompt's tokens, so the shares of
    a row sum to 1.

    >>> region_shares(torch.tensor([0.1, 0.2, 0.3, 0.4]), ["system", "instruction", "instruction", "post"])
    tensor([0.1000, 0.5000, 0.0000, 0.4000])
    """
    if pattern.shape[-1] != len(labels):
        raise ValueError(f"the pattern covers {pattern.shape[-1]} tokens but {len(labels)} token labels were given")
    unknown = set(labels) - set(REGIONS)
    if unknown:
        raise ValueError(f"unknown regions {sorted(unknown)}; regions are {REGIONS}")
    membership = torch.tensor([[label == region for region in REGIONS] for label in labels], dtype=pattern.dtype)
    return pattern @ membership
