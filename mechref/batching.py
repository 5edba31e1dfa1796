"""Batching of prompts for forward passes: chat formatting, length-sorted batches, progress bars."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

from torch import Tensor
from tqdm.auto import tqdm

from mechref.errors import DataFormatError

if TYPE_CHECKING:
    from mechref.models import MechrefModel


def as_texts(model: "MechrefModel", prompts: Sequence[str], chat: bool = True, assistant_prefix: str | None = None) -> list[str]:
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
    model: "MechrefModel", texts: Sequence[str], batch_size: int = 16, desc: str = "forward", progress: bool = True
) -> Iterator[Batch]:
    """Yield left-padded batches of ``texts``, grouped by token length to waste little on padding.

    Rows come out of order; each :class:`Batch` says which prompts it holds.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    lengths = [len(ids) for ids in model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    bar = tqdm(total=len(texts), desc=desc, unit="prompt", disable=not progress, leave=False)
    try:
        for chunk in chunks:
            input_ids, attention_mask = model.tokenize([texts[i] for i in chunk])
            yield Batch(chunk, input_ids, attention_mask)
            bar.update(len(chunk))
    finally:
        bar.close()
