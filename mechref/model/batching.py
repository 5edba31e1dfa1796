"""Batching of prompts for forward passes: chat formatting, length-sorted batches, progress bars."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mechref.errors import ContextLengthError, DataFormatError

if TYPE_CHECKING:
    from mechref.model.loading import MechrefModel


def as_texts(model: MechrefModel, prompts: Sequence[str], chat: bool = True, assistant_prefix: str | None = None) -> list[str]:
    """Turn instructions into formatted chat prompts (``chat=True``) or check raw texts (``chat=False``)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(getattr(prompts, "instructions", prompts))
    if not prompts:
        raise DataFormatError("the prompt list is empty: pass at least one instruction")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataFormatError(f"prompt {i} is {prompt!r}: every prompt must be a non-empty string")
    if not chat:
        return prompts
    return model.chat.format_many(prompts, assistant_prefix=assistant_prefix)


@dataclass
class Batch:
    indices: list[int]  # positions of these rows in the caller's prompt list
    input_ids: Tensor
    attention_mask: Tensor


def iter_batches(
    model: MechrefModel, texts: Sequence[str], batch_size: int = 16, desc: str = "forward", progress: bool = True
) -> Iterator[Batch]:
    """Yield left-padded batches of ``texts``, grouped by token length to waste little on padding.

    Rows come out of order; each :class:`Batch` says which prompts it holds.
    """
    token_lists = model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    yield from iter_token_batches(model, token_lists, batch_size, desc=desc, progress=progress)


def iter_token_batches(
    model: MechrefModel,
    token_lists: Sequence[Sequence[int]],
    batch_size: int = 16,
    desc: str = "forward",
    progress: bool = True,
    max_length: int | None = None,
) -> Iterator[Batch]:
    """:func:`iter_batches` for prompts that are already token ids."""

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    limit = max_length or model.n_ctx
    for i, ids in enumerate(token_lists):
        if len(ids) > limit:
            raise ContextLengthError(
                f"prompt {i} is {len(ids)} tokens long, longer than the model's context of {limit} tokens; shorten it"
            )
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    pad = model.tokenizer.pad_token_id
    bar = tqdm(total=len(token_lists), desc=desc, unit="prompt", disable=not progress, leave=False)
    try:
        for chunk in chunks:
            width = max(len(token_lists[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids = token_lists[i]
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids) :] = 1
            yield Batch(chunk, input_ids.to(model.device), attention_mask.to(model.device))
            bar.update(len(chunk))
    finally:
        bar.close()
