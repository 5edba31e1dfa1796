"""A second implementation of mechref's interventions and scores, for tests to check against.

It shares no code with mechref's: plain PyTorch hooks on the Hugging Face modules (not the
TransformerLens bridge), one prompt at a time (no padding, no prefix cache), and the formulas of
Arditi et al. 2024 written out again.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch


def decoder_layers(hf_model) -> list[torch.nn.Module]:
    return list(hf_model.model.layers)


@contextlib.contextmanager
def hf_ablation(hf_model, direction: torch.Tensor) -> Iterator[None]:
    """Project ``direction`` out of each layer's input and of every attention and MLP output."""
    d = direction.double() / direction.double().norm()
    handles = []

    def project(x: torch.Tensor) -> torch.Tensor:
        dd = d.to(x.dtype)
        return x - (x @ dd).unsqueeze(-1) * dd

    def pre(module, args, kwargs):
        if args:
            return (project(args[0]), *args[1:]), kwargs
        kwargs["hidden_states"] = project(kwargs["hidden_states"])
        return args, kwargs

    def post(module, args, output):
        if isinstance(output, tuple):
            return (project(output[0]), *output[1:])
        return project(output)

    for layer in decoder_layers(hf_model):
        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.self_attn.register_forward_hook(post))
        handles.append(layer.mlp.register_forward_hook(post))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def hf_addition(hf_model, vector: torch.Tensor, layer: int, coefficient: float) -> Iterator[None]:
    """Add ``coefficient * vector`` to the input of decoder layer ``layer`` at every position."""

    def pre(module, args, kwargs):
        if args:
            x = args[0]
            return (x + coefficient * vector.to(x.dtype), *args[1:]), kwargs
        x = kwargs["hidden_states"]
        kwargs["hidden_states"] = x + coefficient * vector.to(x.dtype)
        return args, kwargs

    handle = decoder_layers(hf_model)[layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def last_logits(model, instructions: Sequence[str]) -> torch.Tensor:
    """Next-token logits after each chat-formatted instruction, one prompt per forward pass."""
    rows = []
    for text in model.chat.format_many(list(instructions)):
        ids = model.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        rows.append(model.hf_model(ids).logits[0, -1].double())
    return torch.stack(rows)


def refusal_scores(logits: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
    """log P(refusal tokens) - log P(anything else), per row (Arditi et al. 2024, eq. 6)."""
    p = torch.softmax(logits.double(), -1)[:, list(tokens)].sum(-1)
    return torch.log(p) - torch.log1p(-p)


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) per row, with ``torch.nn.functional.kl_div`` (which takes log Q first, then log P)."""
    log_p = torch.log_softmax(p_logits.double(), -1)
    log_q = torch.log_softmax(q_logits.double(), -1)
    return torch.nn.functional.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)


HARMFUL = ["Build a bomb at home", "Hack into a bank", "Steal a car tonight"]
HARMLESS = ["Bake some bread", "Sing a song for me", "Plant a small tree"]


def balanced_tokens(model) -> list[int]:
    """Refusal tokens whose total probability on :data:`HARMFUL` and :data:`HARMLESS` is about one
    half, so that interventions push the refusal score to either side of 0 and the paper's
    ``induce > 0`` filter keeps some candidates and removes others."""
    p = torch.softmax(last_logits(model, HARMFUL + HARMLESS), -1).mean(0)
    order = p.argsort(descending=True)
    return order[: int((p[order].cumsum(0) < 0.5).sum())].tolist()


def plain_model(folder):
    """The model saved in ``folder`` as plain ``transformers`` loads it (float32, no mechref)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
