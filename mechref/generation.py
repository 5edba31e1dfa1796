"""Batched greedy generation that respects whatever hooks are active.

On a CPU, decoding one token reads every weight once whatever the batch size, so small batches
waste most of a step: the default batch of 32 decodes about five times faster per prompt than a
batch of 6. Past a few dozen rows a step is bound by arithmetic instead, and then every finished
reply still carried along costs as much as a live one. Replies end at very different lengths
(a refusal in 15 tokens, an answer in 128), so the decoder drops each reply from the batch, and
its key/value cache, as soon as it ends (:func:`greedy_decode`): a batch costs the sum of its
replies' lengths, not its longest reply times its rows. It is token-for-token the greedy search of
``transformers``' ``generate``, which it falls back to where the model's generation config asks
for logits processing (a repetition penalty, banned words, ...).
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, cast

import torch
from jaxtyping import Int
from torch import Tensor

from mechref.framework.memory import trim_heap
from mechref.model.batching import as_texts, iter_batches
from mechref.model.loading import MechrefModel


class RowState(Protocol):
    """Per-row hook state that follows the rows of a batch (see :mod:`mechref.row_interventions`)."""

    def start(self, indices: Sequence[int] | Tensor) -> None:
        """A batch starts: these rows of the whole prompt list are in it."""

    def select(self, keep: Tensor) -> None:
        """Rows whose reply ended leave the batch: keep the rows where ``keep`` is True."""


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


# Generation-config fields that change greedy search away from a plain argmax, with their neutral values.
_NEUTRAL = {
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,),
    "renormalize_logits": (None, False),
    "watermarking_config": (None,),
}


def plain_greedy(model: MechrefModel) -> bool:
    """True when the model's generation config asks for no logits processing, so that greedy
    search is a plain argmax per step and :func:`greedy_decode` reproduces ``generate`` exactly."""
    config = getattr(model.hf_model, "generation_config", None)
    if config is None:
        return True
    return all(getattr(config, name, None) in neutral for name, neutral in _NEUTRAL.items())


@torch.no_grad()
def greedy_decode(
    model: MechrefModel,
    input_ids: Int[Tensor, "batch prompt"],
    attention_mask: Int[Tensor, "batch prompt"],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    on_select: Callable[[Tensor], None] | None = None,
    on_first_logits: Callable[[Tensor], None] | None = None,
) -> list[list[int]]:
    """Greedy continuations of a left-padded batch, each ending with its first stop token (kept)
    or after ``max_new_tokens``; a reply leaves the batch, with its cache rows, when it ends
    (``on_select`` is told which rows stay, for hooks that act per row; ``on_first_logits`` gets
    the prompt's last-position logits, ``[batch, d_vocab]``, from which the first token is chosen)."""
    hf = model.hf_model
    device = input_ids.device
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    trim = device.type == "cpu"
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids = position_ids.masked_fill(attention_mask == 0, 1)
    out = hf(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    token = out.logits[:, -1].argmax(-1)
    if on_first_logits is not None:
        on_first_logits(out.logits[:, -1])
    replies: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    alive = torch.arange(input_ids.shape[0], device=device)  # the replies still in the batch, by row
    mask, last = attention_mask, position_ids[:, -1]
    for step in range(max_new_tokens):
        for row, t in zip(alive.tolist(), token.tolist()):
            replies[row].append(t)
        if step == max_new_tokens - 1:
            break
        going = ~torch.isin(token, stops)
        if not bool(going.any()):
            break
        if not bool(going.all()):
            keep = going.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            alive, token, mask, last = alive[keep], token[keep], mask[keep], last[keep]
            if on_select is not None:
                on_select(keep)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        last = last + 1
        out = hf(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=last[:, None],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        token = out.logits[:, -1].argmax(-1)
        if trim:
            trim_heap()  # the cache's previous, shorter tensors: glibc would keep them (see trim_heap)
    return replies


def generate_ids(
    model: MechrefModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    chat: bool = True,
    assistant_prefix: str | None = None,
    progress: bool = True,
    row_state: RowState | None = None,
    first_logits: Callable[[list[int], Tensor], None] | None = None,
) -> list[list[int]]:
    """Greedy continuations as token ids, each cut after its first stop token (which is kept).

    ``row_state`` (hooks that act per row, :class:`mechref.row_interventions.RowInterventions`)
    is told each batch's prompt indices and which rows stay as replies end. ``first_logits`` is
    called per batch with its prompt indices and the logits the first token was chosen from
    (``[batch, d_vocab]``): what :func:`mechref.model.logits.last_token_logits` computes, without a
    second pass over the prompts."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    texts = as_texts(model, prompts, chat, assistant_prefix)
    continuations: list[list[int] | None] = [None] * len(texts)
    stops = stop_token_ids(model)
    plain = plain_greedy(model)
    for batch in iter_batches(model, texts, batch_size, desc="generate", progress=progress):
        if row_state is not None:
            row_state.start(batch.indices)
        indices = list(batch.indices)
        if plain:
            on_select = row_state.select if row_state is not None else None
            on_first = (lambda logits, indices=indices: first_logits(indices, logits)) if first_logits else None
            new = greedy_decode(model, batch.input_ids, batch.attention_mask, max_new_tokens, stops, on_select, on_first)
        else:
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
                    output_logits=first_logits is not None,
                    return_dict_in_generate=True,
                )
            if first_logits is not None:
                first_logits(indices, out.logits[0])  # the raw logits of the first step, before any processing
            new = out.sequences[:, batch.input_ids.shape[1] :].tolist()
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
