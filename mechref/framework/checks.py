"""Checks of user input that run before any long computation.

Each analysis checks its inputs in two steps: what can be checked without the model (files
exist and parse, output targets are free, ids are distinct) runs before the model loads; what
needs the model (a layer index, token ids against the vocabulary, prompt lengths against the
context: :mod:`mechref.model.fit`) runs right after loading, before the first forward pass.

>>> check_token_ids([40, 7])
[40, 7]
>>> check_token_ids([40, 40])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mechref.errors.InputError: refusal token ids must be distinct; 40 is given twice
>>> check_token_ids([5, 300], vocab_size=100)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mechref.errors.InputError: refusal token id 300 is outside this model's vocabulary (0 to 99)...
"""

from __future__ import annotations

from typing import Sequence

from mechref.errors import InputError


def check_token_ids(ids: Sequence[int], vocab_size: int | None = None, what: str = "refusal token id") -> list[int]:
    """``ids`` if they are distinct, non-negative and (given ``vocab_size``) inside the vocabulary."""
    seen: set[int] = set()
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, int):
            raise InputError(f"{what}s must be integers, got {token!r}")
        if token < 0:
            raise InputError(f"{what} {token} is negative; token ids count from 0")
        if token in seen:
            raise InputError(f"{what}s must be distinct; {token} is given twice")
        if vocab_size is not None and token >= vocab_size:
            raise InputError(
                f"{what} {token} is outside this model's vocabulary (0 to {vocab_size - 1}); "
                "find ids with model.tokenizer.encode(...)"
            )
        seen.add(token)
    return list(ids)


def check_layer(layer: int, n_layers: int, flag: str = "--layer") -> int:
    """``layer`` if the model has it."""
    if not 0 <= layer < n_layers:
        raise InputError(f"layer {layer} is out of range for a model with {n_layers} layers (0 to {n_layers - 1}); fix {flag}")
    return layer
