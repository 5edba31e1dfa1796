"""The token prefix many prompts share, run once and reused.

Chat prompts share the template's opening (system prompt, role markers); attacks share the
whole prompt before the suffix. Running that prefix once and handing its key/value cache to
every batch saves that share of every forward pass. Hooks active while the prefix runs act on
it too, so an intervention applies to the cached part exactly as to the rest.

>>> import torch
>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> ids = model.tokenizer(model.chat.format_many(["Write a poem", "Bake bread"]), add_special_tokens=False)["input_ids"]
>>> prefix = SharedPrefix.of(model, ids)
>>> prefix.length > 0, prefix.cache_for(3).get_seq_length() == prefix.length
(True, True)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

if TYPE_CHECKING:
    from mechref.model.loading import MechrefModel


def shared_prefix_length(token_lists: Sequence[Sequence[int]], keep: int = 1) -> int:
    """Length of the token prefix common to every list, leaving at least ``keep`` tokens in each.

    >>> shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
    2
    """
    if not token_lists:
        return 0
    first = token_lists[0]
    limit = min(len(t) for t in token_lists) - keep
    n = 0
    while n < limit and all(t[n] == first[n] for t in token_lists):
        n += 1
    return max(n, 0)


@dataclass
class SharedPrefix:
    """A prefix's token ids and its key/value cache (one row per prefix row)."""

    ids: Int[Tensor, "rows prefix"]
    cache: Any  # a transformers Cache

    @property
    def length(self) -> int:
        """Number of tokens in the shared prefix."""
        return int(self.ids.shape[1])

    @classmethod
    def run(cls, model: MechrefModel, ids: Int[Tensor, ...]) -> SharedPrefix:
        """Run ``ids`` (``[prefix]`` or ``[rows, prefix]``) once under the active hooks."""
        ids = ids.view(1, -1) if ids.ndim == 1 else ids
        return cls(ids, model.prefix_cache(ids))

    @classmethod
    def of(
        cls, model: MechrefModel, token_lists: Sequence[Sequence[int]], keep: int = 1, min_length: int = 1
    ) -> SharedPrefix | None:
        """The prefix every list shares (at least ``min_length`` tokens), or None when there is none."""
        n = shared_prefix_length(token_lists, keep=keep)
        if n < min_length:
            return None
        return cls.run(model, torch.tensor(token_lists[0][:n], dtype=torch.long))

    def cache_for(self, repeats: int, *, copy_cache: bool = True) -> Any:
        """The cache with each prefix row repeated ``repeats`` times, as a batch's forward pass needs.

        A forward pass extends the cache it is given, so each batch gets its own copy unless
        ``copy_cache=False`` (for a cache used exactly once).
        """
        cache = copy.deepcopy(self.cache) if copy_cache else self.cache
        cache.batch_repeat_interleave(repeats)
        return cache

    def mask_for(self, attention_mask: Int[Tensor, "batch seq"]) -> Int[Tensor, "batch prefix_and_seq"]:
        """The attention mask of prefix + batch, for a batch whose own mask is ``attention_mask``."""
        ones = torch.ones(attention_mask.shape[0], self.length, dtype=attention_mask.dtype, device=attention_mask.device)
        return torch.cat([ones, attention_mask], dim=1)
