"""Batched greedy generation that respects whatever hooks are active.

On a CPU, decoding one token reads every weight once whatever the batch size (it is bound by
memory bandwidth, not arithmetic), so large batches cost little more per step than small ones:
the default batch of 32 decodes about five times faster per prompt than a batch of 6.
"""

from __future__ import annotations

from typing import Sequence, cast

import torch

from mechref.batching import as_texts, iter_batches
from mechref.models import MechrefModel


def stop_token_ids(model: MechrefModel) -> list[int]:
    """Token ids that end a reply: the tokenizer's EOS plus the generation config's."""
    ids = set()
    if model.tokenizer.eos_token_id is not None:
        ids.add(int(model.tokenizer.eos_token_id))
    config_eos = getattr(getattr(model.hf_model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(int(i) for i in config_eos)
    return sorted(ids)


def generate_ids(
    model: MechrefModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    chat: bool = True,
    assistant_prefix: str | None = None,
    progress: bool = True,
) -> list[list[int]]:
    """Greedy continuations as token ids, each cut after its first stop token (which is kept)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    texts = as_texts(model, prompts, chat, assistant_prefix)
    continuations: list[list[int] | None] = [None] * len(texts)
    stops = stop_token_ids(model)
    for batch in iter_batches(model, texts, batch_size, desc="generate", progress=progress):
        with torch.no_grad():
            out = model.hf_model.generate(  # type: ignore[operator]  # GenerationMixin.generate
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=stops,
                pad_token_id=model.tokenizer.pad_token_id,
            )
        new = out[:, batch.input_ids.shape[1] :].tolist()
        for row, index in enumerate(batch.indices):
            ids = new[row]
            cut = next((i + 1 for i, t in enumerate(ids) if t in stops), len(ids))
            continuations[index] = ids[:cut]
    return cast(list[list[int]], continuations)  # every index was filled: the batches cover every prompt


def generate(
    model: MechrefModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    chat: bool = True,
    assistant_prefix: str | None = None,
    progress: bool = True,
) -> list[str]:
    """Greedy completions of ``prompts``, stopping at EOS, as text (the prompt is not included).

    Hooks attached by an enclosing context (``directional_ablation``, ``activation_addition``,
    ``model.hooks(...)``) act on every step, including the prompt's own forward pass.

    >>> from mechref.testing import tiny_model
    >>> model = tiny_model("qwen2")
    >>> out = generate(model, ["Write a poem", "Hi"], max_new_tokens=4, progress=False)
    >>> len(out), all(isinstance(t, str) for t in out)
    (2, True)
    """
    ids = generate_ids(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        chat=chat,
        assistant_prefix=assistant_prefix,
        progress=progress,
    )
    return [model.decode(row, skip_special_tokens=True) for row in ids]
