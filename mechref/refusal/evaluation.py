"""Evaluation of a refusal direction: generations under each intervention, judged.

Conditions (Arditi et al. 2024, sections 3 and 4):

* ``harmful_baseline``, ``harmful_ablation`` (direction ablated everywhere),
  ``harmful_actadd`` (direction subtracted at its layer: activation addition with coefficient -1);
* ``harmless_baseline``, ``harmless_actadd`` (direction added at its layer: coefficient +1).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from mechref.generation import generate
from mechref.interventions import activation_addition, directional_ablation
from mechref.io import atomic_path
from mechref.models import MechrefModel
from mechref.scoring import Judge, SubstringJudge, refusal_score

CONDITIONS = ("harmful_baseline", "harmful_ablation", "harmful_actadd", "harmless_baseline", "harmless_actadd")


def intervention(model: MechrefModel, condition: str, direction: torch.Tensor, layer: int):
    """The context manager that puts ``model`` in ``condition``."""
    kind = condition.split("_", 1)[1]
    if kind == "baseline":
        return contextlib.nullcontext(model)
    if kind == "ablation":
        return directional_ablation(model, direction)
    if kind == "actadd":
        return activation_addition(model, direction, layer, -1.0 if condition.startswith("harmful") else 1.0)
    raise ValueError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")


@dataclass
class ConditionResult:
    condition: str
    prompts: list[str]
    completions: list[str]
    verdicts: list[bool]
    refusal_scores: list[float] | None = None

    @property
    def refusal_rate(self) -> float:
        return sum(self.verdicts) / len(self.verdicts)

    @property
    def mean_refusal_score(self) -> float | None:
        return None if self.refusal_scores is None else sum(self.refusal_scores) / len(self.refusal_scores)

    def rows(self) -> list[dict]:
        scores = self.refusal_scores or [None] * len(self.prompts)
        return [{"condition": self.condition, "prompt": p, "completion": c, "refusal": v, "refusal_score": s}
                for p, c, v, s in zip(self.prompts, self.completions, self.verdicts, scores)]


def evaluate_condition(
    model: MechrefModel, condition: str, prompts: Sequence[str], direction: torch.Tensor, layer: int, *,
    judge: Judge | None = None, refusal_tokens: Sequence[int] | None = None,
    max_new_tokens: int = 64, batch_size: int = 32, progress: bool = True,
) -> ConditionResult:
    """Generate for ``prompts`` under ``condition``, judge the replies and (optionally) score them."""
    judge = judge or SubstringJudge()
    prompts = list(prompts)
    with intervention(model, condition, direction, layer):
        completions = generate(model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
        scores = (refusal_score(model, prompts, refusal_tokens, batch_size=batch_size, progress=False).tolist()
                  if refusal_tokens else None)
    verdicts = judge.judge_many(completions, prompts=prompts)
    return ConditionResult(condition, prompts, completions, verdicts, scores)


def write_jsonl(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write rows as JSON lines, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
