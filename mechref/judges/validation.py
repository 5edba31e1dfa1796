"""Which judge reads which language: agreement with human labels, per judge and language.

A refusal rate is a measurement only where its judge was checked against people reading the
same kind of replies. ``mechref/data/judge_validation.json`` lists every such check mechref has:
the judge, the language, the model whose replies were labelled (``None`` when the labels are of
several other models' replies, as XSTest's are), the mined judge's phrases, and accuracy and
Cohen's kappa on the labelled replies, none of which the judge was built on. The file is written
from the benchmarks' JSON by ``python benchmarks/bench_judges.py registry`` (a test fails when
they differ).

:func:`judge_validation` says, for one judge, language and analysed model, whether a check
exists and passes (kappa at least :data:`MIN_KAPPA`): analyses mark every other language's rates
*judge not validated*.

>>> judge_validation("substring", "de", "qwen2.5-coder-1.5b-instruct").status
'validated'
>>> judge_validation("substring", "de", "another/model").status   # lists are checked per model
'no labelled check'
>>> judge_validation("probe", "en", "another/model").validated     # XSTest: other models' replies
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal, Sequence

#: Cohen's kappa a judge needs in a language to count as validated: "substantial" agreement
#: (Landis & Koch 1977); below it a rate says little.
MIN_KAPPA = 0.6
Status = Literal["validated", "below the bar", "no labelled check"]


@dataclass(frozen=True)
class JudgeValidation:
    """The outcome of looking a judge up: its status, and the check behind it (if any)."""

    judge: str
    language: str
    status: Status
    check: dict | None = None

    @property
    def validated(self) -> bool:
        """Whether the judge was checked against hand labels in this language and passed."""
        return self.status == "validated"

    def to_dict(self) -> dict:
        """The validation as written to ``summary.json``."""
        return {"judge": self.judge, "language": self.language, "status": self.status, "check": self.check}

    def describe(self) -> str:
        """One line for a terminal or a caption.

        >>> judge_validation("mined", "ko", "qwen2.5-coder-1.5b-instruct", phrases=["매우"]).describe()
        'mined (ko): below the bar: kappa 0.24 on 32 hand-labelled replies (needs 0.6)'
        """
        if self.check is None:
            return f"{self.judge} ({self.language}): no labelled check"
        kappa, n = self.check["kappa"], self.check["n"]
        bar = f" (needs {MIN_KAPPA})" if not self.validated else ""
        return f"{self.judge} ({self.language}): {self.status}: kappa {kappa:.2f} on {n} hand-labelled replies{bar}"


@lru_cache(maxsize=1)
def registry() -> tuple[dict, ...]:
    """Every labelled check mechref ships (``mechref/data/judge_validation.json``)."""
    path = resources.files("mechref") / "data" / "judge_validation.json"
    return tuple(json.loads(path.read_text(encoding="utf-8"))["checks"])


def judge_validation(judge: str, language: str, model: str | None, *, phrases: Sequence[str] | None = None) -> JudgeValidation:
    """The labelled check of ``judge`` on ``language`` replies of ``model``.

    A check counts when it is of this judge and language, and of this model's replies or of
    several other models' (``model`` None in the registry); for the ``mined`` judge, only when the
    run mined the very ``phrases`` that were checked (other phrases are another judge).
    """
    wanted = sorted(phrases) if phrases is not None else None
    for check in registry():
        if check["judge"] != judge or check["language"] != language:
            continue
        if check["model"] is not None and check["model"] != model:
            continue
        if judge == "mined" and sorted(check.get("phrases") or []) != wanted:
            continue
        status: Status = "validated" if check["kappa"] >= MIN_KAPPA else "below the bar"
        return JudgeValidation(judge, language, status, check)
    return JudgeValidation(judge, language, "no labelled check")


#: The judges an analysis may pick per language by their checks, cheapest first (a tie goes to it).
PICKABLE: tuple[str, ...] = ("substring", "probe")


def best_judge(language: str, model: str | None, judges: Sequence[str] = PICKABLE) -> JudgeValidation | None:
    """Of ``judges``, the one with the highest kappa among those validated on ``language`` replies of
    ``model`` (a tie goes to the earlier, cheaper one); None when none is.

    >>> best_judge("es", "qwen2.5-coder-1.5b-instruct").judge   # the probe: kappa 1.0, the list 0.83
    'probe'
    >>> best_judge("vi", "qwen2.5-coder-1.5b-instruct") is None   # no judge was checked in Vietnamese
    True
    >>> best_judge("en", "another/model").judge   # XSTest's labels are of other models' replies
    'probe'
    """
    found = [judge_validation(judge, language, model) for judge in judges]
    validated = [(v.check["kappa"] if v.check else 0.0, -i, v) for i, v in enumerate(found) if v.validated]
    return max(validated, key=lambda item: item[:2])[2] if validated else None


__all__ = ["MIN_KAPPA", "PICKABLE", "JudgeValidation", "best_judge", "judge_validation", "registry"]
