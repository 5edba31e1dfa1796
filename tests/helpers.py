"""Helpers the tests share (the models and folders they build come from :mod:`mechref.testing`;
the second implementation they check against is :mod:`tests.reference`)."""

from __future__ import annotations

import torch


def hf_greedy(model, batch, max_new_tokens, stops):
    """Plain ``transformers`` greedy ``generate`` of a tokenized batch, each row cut after its first stop token."""
    out = model.hf_model.generate(
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
    rows = []
    for ids in out[:, batch.input_ids.shape[1] :].tolist():
        cut = next((i + 1 for i, t in enumerate(ids) if t in stops), len(ids))
        rows.append(ids[:cut])
    return rows


def greedy_without_cache(model, prompt, n):
    """``n`` greedy tokens by full forward passes (no key/value cache): the reference for cached decoding."""
    ids, _ = model.tokenize([model.chat.format(prompt)])
    for _ in range(n):
        logits = model.forward(ids)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, -n:].tolist()
