"""How far an edited model moves from the unedited one on the unedited model's own replies.

The unedited model writes greedy replies to harmless prompts; every condition then reads those
same tokens (teacher forcing), and at each reply position mechref compares its next-token
distribution with the unedited model's: the KL divergence KL(unedited ‖ edited) at the first
reply token and averaged over the first few, and the cross-entropy of the reply tokens (how
surprised the edited model is by what the unedited model wrote). The unedited model's own
cross-entropy is the reference; an edit that does no damage has KL 0 and the same cross-entropy.

>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> replies = [[5, 6, 7], [8]]
>>> sequences = reply_sequences(model, ["Write a poem", "Hi"], replies)
>>> result = divergences({"original": Condition(model)}, sequences, [3, 1], kl_tokens=2, reference="original")
>>> [round(x, 6) for x in result["original"].kl_first]
[0.0, 0.0]
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechref.errors import DataFormatError, NonFiniteError
from mechref.model.batching import as_texts, iter_token_batches
from mechref.model.loading import MechrefModel


@dataclass
class Condition:
    """A model in one state: ``model`` with whatever ``context()`` attaches (hooks), or nothing."""

    model: MechrefModel
    context: Callable[[], ContextManager] = field(default=contextlib.nullcontext)


@dataclass
class Divergence:
    """Per prompt: KL at the first reply token, mean KL over the first ``kl_tokens``, mean cross-entropy of the reply."""

    kl_first: list[float]
    kl_mean: list[float]
    cross_entropy: list[float]


def reply_sequences(model: MechrefModel, prompts: Sequence[str], replies: Sequence[Sequence[int]]) -> list[list[int]]:
    """Each chat-formatted prompt's token ids followed by its reply's token ids."""
    if len(prompts) != len(replies):
        raise DataFormatError(f"need one reply per prompt (got {len(prompts)} prompts, {len(replies)} replies)")
    for i, reply in enumerate(replies):
        if not reply:
            raise DataFormatError(f"reply {i} is empty: a divergence needs at least one reply token")
    texts = as_texts(model, prompts)
    prompt_ids = model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [list(p) + list(r) for p, r in zip(prompt_ids, replies)]


def reply_logits(
    condition: Condition, input_ids: Int[Tensor, "batch seq"], attention_mask: Int[Tensor, "batch seq"], n_reply: int
) -> Float[Tensor, "batch n_reply d_vocab"]:
    """Next-token logits (the model's dtype and device) at the ``n_reply`` positions that predict the
    last ``n_reply`` tokens of each (left-padded) row."""
    with condition.context():
        logits = condition.model.forward(input_ids, attention_mask, logits_for_last=n_reply + 1)
    return logits[:, -(n_reply + 1) : -1]  # the last position predicts a token after the reply: not part of it


def log_probs(logits: Float[Tensor, "*rows d_vocab"]) -> Float[Tensor, "*rows d_vocab"]:
    """Log-probabilities in float32 on the CPU; NaN or inf logits are an error."""
    out = torch.log_softmax(logits.float(), dim=-1).cpu()
    if not torch.isfinite(out).all():
        raise NonFiniteError("the model produced NaN/inf logits; in float16 try bfloat16 or float32")
    return out


def divergences(
    conditions: Mapping[str, Condition],
    sequences: Sequence[Sequence[int]],
    reply_lengths: Sequence[int],
    *,
    kl_tokens: int,
    reference: str,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Divergence]:
    """KL(reference ‖ condition) and the cross-entropy of the reply tokens for every condition.

    ``sequences`` are prompt-plus-reply token ids (:func:`reply_sequences`); the last
    ``reply_lengths[i]`` tokens of sequence ``i`` are its reply. All conditions read the same
    batches, so the reference's logits are computed once per batch and never stored whole; the
    float32 distributions are made one row at a time (a batch of them is the vocabulary times the
    reply tokens times the rows, several times over: 2 GiB for the embedded model at the default
    sizes), with the same numbers.
    """
    if reference not in conditions:
        raise ValueError(f"the reference condition {reference!r} is not among {', '.join(conditions)}")
    if len(sequences) != len(reply_lengths):
        raise DataFormatError(f"need one reply length per sequence (got {len(sequences)} and {len(reply_lengths)})")
    found = {name: Divergence([0.0] * len(sequences), [0.0] * len(sequences), [0.0] * len(sequences)) for name in conditions}
    first = conditions[reference].model
    for batch in iter_token_batches(first, sequences, batch_size, desc="KL and cross-entropy", progress=progress):
        lengths = [int(reply_lengths[i]) for i in batch.indices]
        width = max(lengths)
        targets = batch.input_ids[:, -width:].cpu()
        reference_logits = reply_logits(conditions[reference], batch.input_ids, batch.attention_mask, width)
        for name, condition in conditions.items():
            logits = (
                reference_logits if name == reference else reply_logits(condition, batch.input_ids, batch.attention_mask, width)
            )
            for row, index in enumerate(batch.indices):
                # Made again per condition (a softmax, cheap beside a forward pass) rather than kept for the batch.
                reference_lp = log_probs(reference_logits[row])  # [width, d_vocab]
                lp = reference_lp if name == reference else log_probs(logits[row])
                kl = (reference_lp.exp() * (reference_lp - lp)).sum(-1).clamp_min(0.0)  # rounding can dip below 0
                nll = -lp.gather(-1, targets[row].unsqueeze(-1)).squeeze(-1)
                start = width - lengths[row]  # this row's reply starts here; positions before it are prompt
                kl_row, nll_row = kl[start:].double(), nll[start:].double()
                found[name].kl_first[index] = float(kl_row[0])
                found[name].kl_mean[index] = float(kl_row[:kl_tokens].mean())
                found[name].cross_entropy[index] = float(nll_row.mean())
            del logits
    return found
