"""Evaluation of a refusal direction: generations under each intervention, judged.

Conditions (Arditi et al. 2024, sections 3 and 4):

* ``harmful_baseline``, ``harmful_ablation`` (direction ablated everywhere),
  ``harmful_actadd`` (direction subtracted at its layer: activation addition with coefficient -1);
* ``harmless_baseline``, ``harmless_actadd`` (direction added at its layer: coefficient +1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ContextManager, Sequence

import torch

from mechref.generation import generate_ids
from mechref.interventions import intervene
from mechref.judges.core import Judge, SubstringJudge
from mechref.model.loading import MechrefModel
from mechref.rates import Rate
from mechref.scoring import refusal_score_from_logits

CONDITIONS = ("harmful_baseline", "harmful_ablation", "harmful_actadd", "harmless_baseline", "harmless_actadd")


def intervention(model: MechrefModel, condition: str, direction: torch.Tensor, layer: int) -> ContextManager[MechrefModel]:
    """The context manager that puts ``model`` in ``condition``: activation addition subtracts the
    direction from harmful prompts (coefficient -1) and adds it to harmless ones (+1)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    label, kind = condition.split("_", 1)
    if kind == "actadd":
        return intervene(model, "addition", direction, layer, -1.0 if label == "harmful" else 1.0)
    return intervene(model, "ablation" if kind == "ablation" else "baseline", direction, layer)


@dataclass
class ConditionResult:
    condition: str
    prompts: list[str]
    completions: list[str]
    verdicts: list[bool]
    refusal_scores: list[float] | None = None

    @property
    def refusal_rate(self) -> Rate:
        """Share of replies judged refusals, as :class:`~mechref.rates.Rate`."""
        return Rate.of(self.verdicts)

    @property
    def mean_refusal_score(self) -> float | None:
        """Mean logit refusal score of the prompts (None when not scored)."""
        return None if self.refusal_scores is None else sum(self.refusal_scores) / len(self.refusal_scores)

    def rows(self) -> list[dict]:
        """One record per prompt: condition, prompt, reply, verdict and refusal score."""
        scores: list[float | None] = list(self.refusal_scores) if self.refusal_scores else [None] * len(self.prompts)
        return [
            {"condition": self.condition, "prompt": p, "completion": c, "refusal": v, "refusal_score": s}
            for p, c, v, s in zip(self.prompts, self.completions, self.verdicts, scores)
        ]


def evaluate_condition(
    model: MechrefModel,
    condition: str,
    prompts: Sequence[str],
    direction: torch.Tensor,
    layer: int,
    *,
    judge: Judge | None = None,
    refusal_tokens: Sequence[int] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    generation_batch_size: int | None = None,
    progress: bool = True,
) -> ConditionResult:
    """Generate for ``prompts`` under ``condition``, judge the replies and (optionally) score them.

    ``generation_batch_size`` (default: ``batch_size``) rows decode together: on a CPU a step
    costs little more for 100 rows than for 32, since finished replies leave the batch."""
    judge = judge or SubstringJudge()
    prompts = list(prompts)
    found: dict[int, float] = {}

    def score_first_logits(indices: list[int], logits: torch.Tensor) -> None:
        # The refusal score reads the logits the first reply token is chosen from: the same
        # forward pass, so the prompts are not run a second time.
        assert refusal_tokens  # only passed when there are refusal tokens
        found.update(zip(indices, refusal_score_from_logits(logits, refusal_tokens).tolist()))

    with intervention(model, condition, direction, layer):
        ids = generate_ids(
            model,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=generation_batch_size or batch_size,
            progress=progress,
            first_logits=score_first_logits if refusal_tokens else None,
        )
    completions = [model.decode(row, skip_special_tokens=True) for row in ids]
    scores = [found[i] for i in range(len(prompts))] if refusal_tokens else None
    verdicts = judge.judge_many(completions, prompts=prompts)
    return ConditionResult(condition, prompts, completions, verdicts, scores)
