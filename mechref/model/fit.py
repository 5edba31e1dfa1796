"""Checks that need the model, run right after it loads and before the first forward pass."""

from __future__ import annotations

from typing import Sequence

from mechref.errors import ContextLengthError
from mechref.model.loading import MechrefModel


def check_prompt_lengths(model: MechrefModel, instructions: Sequence[str], extra_tokens: int = 0, what: str = "prompt") -> None:
    """Raise :class:`~mechref.errors.ContextLengthError` if a chat-formatted instruction plus
    ``extra_tokens`` (a suffix, the tokens to generate) does not fit the model's context."""
    if not instructions:
        return
    texts = model.chat.format_many(list(instructions))
    lengths = [len(ids) for ids in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    for i, length in enumerate(lengths):
        if length + extra_tokens > model.n_ctx:
            raise ContextLengthError(
                f"{what} {i} is {length} tokens long once formatted; with {extra_tokens} more it exceeds the model's "
                f"context of {model.n_ctx} tokens; shorten it or lower --max-new-tokens ({instructions[i][:60]!r}…)"
            )
