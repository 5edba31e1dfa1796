"""Next-token logits at the last position of many prompts: the one forward pass that refusal
scores, KL divergences, chat-model judges and selection all rest on.

>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> tuple(last_token_logits(model, ["Write a poem", "Bake bread"], progress=False).shape) == (2, model.cfg.d_vocab)
True
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.errors import NonFiniteError
from mechref.model.batching import as_texts, iter_batches, iter_token_batches
from mechref.model.loading import MechrefModel
from mechref.model.prefix import SharedPrefix


def last_token_logits(
    model: MechrefModel,
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    chat: bool = True,
    progress: bool = True,
    reuse_prefix: bool = True,
) -> Float[Tensor, "n_prompt d_vocab"]:
    """Next-token logits at the last position of each prompt (float32, on the CPU).

    Only the last position is unembedded, and the hooks of any enclosing intervention apply.
    With ``reuse_prefix`` (the default) the token prefix shared by all prompts (the chat
    template's opening and system prompt) is computed once, under the same hooks, and its
    key/value cache reused by every batch.
    """
    texts = as_texts(model, prompts, chat)
    out = torch.empty(len(texts), model.cfg.d_vocab, dtype=torch.float32)
    token_lists = model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    # Below a few tokens the cache bookkeeping costs more than it saves.
    prefix = SharedPrefix.of(model, token_lists, min_length=4) if reuse_prefix else None
    if prefix is None:
        for batch in iter_batches(model, texts, batch_size, desc="logits", progress=progress):
            logits = model.forward(batch.input_ids, batch.attention_mask, last_logits_only=True)
            out[batch.indices] = logits[:, -1].float().cpu()
    else:
        suffixes = [ids[prefix.length :] for ids in token_lists]
        for batch in iter_token_batches(
            model, suffixes, batch_size, desc="logits", progress=progress, max_length=model.n_ctx - prefix.length
        ):
            cache = prefix.cache_for(batch.input_ids.shape[0])
            logits = model.forward(
                batch.input_ids, prefix.mask_for(batch.attention_mask), last_logits_only=True, past_key_values=cache
            )
            out[batch.indices] = logits[:, -1].float().cpu()
    if not torch.isfinite(out).all():
        raise NonFiniteError("the model produced NaN/inf logits; in float16 try bfloat16 or float32")
    return out
