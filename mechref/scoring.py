"""Logit scores of refusal: the refusal score of Arditi et al. (eq. 5), KL divergence between
next-token distributions, and the refusal tokens both rest on. Judges of generated text are in
:mod:`mechref.judges.core`.

>>> import torch
>>> logits = torch.zeros(2, 10)
>>> logits[0, 3] = 5.0                      # the first prompt strongly predicts token 3
>>> [round(x, 2) for x in refusal_score_from_logits(logits, [3]).tolist()]
[2.8, -2.2]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.data.prompts import PromptSet
from mechref.errors import DataFormatError, NoRefusalsError
from mechref.generation import generate_ids
from mechref.judges.core import Judge, SubstringJudge
from mechref.model.loading import MechrefModel
from mechref.model.logits import last_token_logits


def refusal_score_from_logits(
    logits: Float[Tensor, "n d_vocab"], refusal_tokens: Sequence[int], eps: float = 1e-8
) -> Float[Tensor, " n"]:
    """log(p / (1 - p)) where p is the probability mass on the refusal tokens (Arditi et al., eq. 5)."""
    if len(refusal_tokens) == 0:
        raise ValueError("refusal_tokens is empty: derive them with derive_refusal_tokens() or pass some")
    probs = torch.softmax(logits.double(), dim=-1)
    p = probs[:, list(refusal_tokens)].sum(-1).clamp(eps, 1 - eps)
    return (torch.log(p) - torch.log1p(-p)).float()


def refusal_score(
    model: MechrefModel,
    prompts: Sequence[str],
    refusal_tokens: Sequence[int],
    *,
    batch_size: int = 16,
    chat: bool = True,
    progress: bool = True,
) -> Float[Tensor, " n_prompt"]:
    """The logit refusal score of each prompt: positive when refusing is the likelier first token."""
    return refusal_score_from_logits(
        last_token_logits(model, prompts, batch_size=batch_size, chat=chat, progress=progress), refusal_tokens
    )


def kl_divergence(logits_p: Float[Tensor, "n d_vocab"], logits_q: Float[Tensor, "n d_vocab"]) -> Float[Tensor, " n"]:
    """KL(P || Q) between the next-token distributions given by two sets of logits.

    >>> x = torch.randn(3, 10)
    >>> bool(kl_divergence(x, x).abs().max() < 1e-6)
    True
    """
    log_p = torch.log_softmax(logits_p.double(), -1)
    log_q = torch.log_softmax(logits_q.double(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).float()


@dataclass
class RefusalTokens:
    """The first tokens of a model's refusals, and how they were found."""

    token_ids: list[int]
    tokens: list[str]
    counts: list[int]  # how many refusals open with each token
    n_refusals: int
    n_prompts: int
    harmless_counts: list[int] | None = None  # how many replies to harmless prompts open with it
    n_harmless: int = 0
    dropped: list[str] = field(default_factory=list)  # candidates left out, and why

    def to_dict(self) -> dict:
        """The refusal tokens as written to ``summary.json``."""
        return self.__dict__.copy()


def derive_refusal_tokens(
    model: MechrefModel,
    harmful_prompts: Sequence[str],
    *,
    judge: Judge | None = None,
    max_new_tokens: int = 16,
    min_share: float = 0.05,
    max_tokens: int = 4,
    batch_size: int = 32,
    progress: bool = True,
    harmless_prompts: Sequence[str] = (),
    min_count: int = 2,
) -> RefusalTokens:
    """Find the model's refusal tokens: the first tokens of its refusals of ``harmful_prompts``.

    The model generates a short reply to each prompt; replies the judge calls refusals vote for
    their first token. Tokens with at least ``min_share`` of the votes (and at least 2) are kept
    (at most ``max_tokens``), most common first; with ``harmless_prompts``, the model's replies to
    those too, and a token that opens many of them is left out: it marks a topic or a way of
    answering, not a refusal. Pass the result's ``token_ids`` to :func:`refusal_score`.
    """
    judge = judge or SubstringJudge()
    replies = generate_ids(model, harmful_prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    verdicts = judge.judge_many([model.decode(ids, skip_special_tokens=True) for ids in replies], list(harmful_prompts))
    harmless = (
        generate_ids(model, harmless_prompts, max_new_tokens=1, batch_size=batch_size, progress=progress)
        if harmless_prompts
        else None
    )
    return refusal_tokens_from_replies(
        model,
        replies,
        verdicts,
        min_share=min_share,
        max_tokens=max_tokens,
        judge_name=f"{getattr(judge, 'language', '')} {type(judge).__name__}".strip(),
        harmless_replies=harmless,
        min_count=min_count,
    )


def refusal_tokens_from_replies(
    model: MechrefModel,
    replies: Sequence[Sequence[int]],
    verdicts: Sequence[bool],
    *,
    min_share: float = 0.05,
    max_tokens: int = 4,
    judge_name: str = "judge",
    min_count: int = 2,
    harmless_replies: Sequence[Sequence[int]] | None = None,
    max_harmless_share: float = 0.10,
) -> RefusalTokens:
    """Refusal tokens from replies already generated and judged: the replies judged refusals vote
    for their first token (see :func:`derive_refusal_tokens`).

    A token is kept when at least ``min_count`` refusals, and ``min_share`` of them, open with it
    (one refusal opening with "poison" makes no refusal token) and, given ``harmless_replies``, when
    at most ``max_harmless_share`` of those open with it. The result says which were left out and why.
    """
    votes: Counter[int] = Counter()
    refusals = 0
    for ids, refused in zip(replies, verdicts):
        if ids and refused:
            refusals += 1
            votes[ids[0]] += 1
    if refusals == 0:
        raise NoRefusalsError(
            f"no refusal to explain: the model refused none of the {len(replies)} harmful prompts it was given (by the "
            f"{judge_name}), so no refusal tokens can be derived. Try a safety-aligned chat model or another system "
            "prompt (--system-prompt); or pass refusal tokens explicitly (--refusal-tokens, or a --direction-run computed "
            "with them), or use prompts it refuses"
        )
    harmless: Counter[int] = Counter(ids[0] for ids in harmless_replies or () if ids)
    n_harmless = sum(harmless.values())
    kept: list[tuple[int, int]] = []
    dropped: list[str] = []
    for token, count in votes.most_common():
        name = model.decode(token)
        if count < max(min_count, min_share * refusals):
            dropped.append(f"{name!r}: opens only {count} of {refusals} refusals")
        elif n_harmless and harmless[token] > max_harmless_share * n_harmless:
            dropped.append(f"{name!r}: opens {harmless[token]} of {n_harmless} replies to harmless prompts too")
        elif len(kept) < max_tokens:
            kept.append((token, count))
        else:
            dropped.append(f"{name!r}: beyond the {max_tokens} most common")
    return RefusalTokens(
        token_ids=[t for t, _ in kept],
        tokens=[model.decode(t) for t, _ in kept],
        counts=[c for _, c in kept],
        n_refusals=refusals,
        n_prompts=len(replies),
        harmless_counts=[harmless[t] for t, _ in kept] if harmless_replies is not None else None,
        n_harmless=n_harmless,
        dropped=dropped,
    )


def filter_by_refusal_score(
    model: MechrefModel,
    harmful: PromptSet,
    harmless: PromptSet,
    refusal_tokens: Sequence[int],
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[PromptSet, PromptSet]:
    """Keep harmful prompts the model refuses (score > 0) and harmless ones it does not (score < 0)."""
    keep = []
    for prompts, want_refusal in ((harmful, True), (harmless, False)):
        scores = refusal_score(model, prompts.instructions, refusal_tokens, batch_size=batch_size, progress=progress)
        mask = (scores > 0) if want_refusal else (scores < 0)
        index = [i for i, m in enumerate(mask.tolist()) if m]
        if not index and want_refusal:
            # Loud: a model that refuses nothing has no refusal direction to find.
            raise DataFormatError(
                f"no refusal to explain: the model gives none of the {len(scores)} {prompts.label} prompts a positive "
                f"refusal score (the log-odds of its refusal tokens {list(refusal_tokens)}, highest "
                f"{float(scores.max()):+.2f}), so it does not refuse them. Try a safety-aligned chat model, another "
                "system prompt (--system-prompt), other refusal tokens (--refusal-tokens), or keep every prompt "
                "(--no-filter: the direction then separates harmful from harmless prompts, not refusal)"
            )
        if not index:
            raise DataFormatError(
                f"the refusal-score filter removed every {prompts.label} prompt: the model's refusal tokens "
                f"{list(refusal_tokens)} score above 0 on all {len(scores)} (lowest {float(scores.min()):+.2f}); check the "
                "refusal tokens (--refusal-tokens) or keep every prompt (--no-filter)"
            )
        keep.append(
            replace(
                prompts, instructions=[prompts.instructions[i] for i in index], categories=[prompts.categories[i] for i in index]
            )
        )
    return keep[0], keep[1]
