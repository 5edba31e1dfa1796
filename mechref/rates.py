"""Rates with their counts: ``k`` of ``n`` and a 95% Wilson score interval.

Every refusal rate mechref reports is a :class:`Rate`, so the count behind it travels with it.

>>> rate = Rate.of([True, False, True, True])
>>> rate.k, rate.n, rate.value
(3, 4, 0.75)
>>> [round(x, 3) for x in rate.interval]
[0.301, 0.954]
>>> str(rate)
'0.75 (3/4)'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from mechref.errors import DataFormatError

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class Rate:
    """``k`` successes (refusals) out of ``n`` trials (replies)."""

    k: int
    n: int

    def __post_init__(self) -> None:
        if self.n < 1 or not 0 <= self.k <= self.n:
            raise DataFormatError(f"a rate needs 0 <= k <= n and n >= 1, got k={self.k}, n={self.n}: nothing to count")

    @classmethod
    def of(cls, outcomes: Iterable[bool]) -> Rate:
        """The rate of ``True`` among ``outcomes`` (raises on an empty list: a rate of nothing is no number)."""
        values = [bool(x) for x in outcomes]
        return cls(sum(values), len(values))

    @property
    def value(self) -> float:
        """k / n."""
        return self.k / self.n

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson score interval (sensible at k = 0 and k = n, unlike the normal one)."""
        p, n, z = self.value, self.n, Z_95
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def to_dict(self) -> dict:
        """The rate for JSON: rate, k, n and the 95% interval, rounded to 4 places."""
        low, high = self.interval
        return {"rate": round(self.value, 4), "k": self.k, "n": self.n, "ci95": [round(low, 4), round(high, 4)]}

    def __str__(self) -> str:
        return f"{self.value:.2f} ({self.k}/{self.n})"


def mean_interval(values: Sequence[float]) -> dict:
    """The mean of per-prompt ``values`` with a 95% interval (normal approximation over prompts).

    >>> mean_interval([1.0, 2.0, 3.0])
    {'mean': 2.0, 'n': 3, 'sd': 1.0, 'ci95': [0.8684, 3.1316]}
    >>> mean_interval([0.5])["ci95"] is None   # one value: no spread to measure
    True
    """
    values = [float(v) for v in values]
    if not values:
        raise DataFormatError("a mean of no values is no number: nothing was measured")
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": round(mean, 6), "n": 1, "sd": None, "ci95": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = Z_95 * sd / math.sqrt(n)
    return {"mean": round(mean, 6), "n": n, "sd": round(sd, 6), "ci95": [round(mean - half, 4), round(mean + half, 4)]}


def rate_or_none(outcomes: Iterable[bool]) -> Rate | None:
    """:meth:`Rate.of`, or None for no outcomes (e.g. a subset that happens to be empty)."""
    values = list(outcomes)
    return Rate.of(values) if values else None


def mcnemar_exact(before: Sequence[bool], after: Sequence[bool]) -> dict:
    """Exact McNemar test of a paired change: the same prompts judged under two conditions.

    Only the discordant pairs count: ``changed_to_true`` prompts refused after but not before,
    ``changed_to_false`` the reverse. Under "no effect" each discordant pair is a fair coin, so the
    two-sided p-value is the binomial tail of the rarer change, doubled (capped at 1).

    >>> mcnemar_exact([True] * 8, [False] * 8)
    {'n_pairs': 8, 'changed_to_true': 0, 'changed_to_false': 8, 'p_value': 0.00781}
    >>> mcnemar_exact([True, False], [True, False])["p_value"]
    1.0
    """
    if len(before) != len(after) or not before:
        raise DataFormatError(f"a paired test needs the same prompts under both conditions (got {len(before)} and {len(after)})")
    up = sum((not b) and a for b, a in zip(before, after))
    down = sum(b and (not a) for b, a in zip(before, after))
    n = up + down
    tail = sum(math.comb(n, i) for i in range(min(up, down) + 1)) / 2**n if n else 1.0
    return {
        "n_pairs": len(before),
        "changed_to_true": up,
        "changed_to_false": down,
        "p_value": float(f"{min(1.0, 2 * tail):.3g}"),
    }


def paired_test(rows: Iterable[dict], condition_key: str, prompt_key: str, verdict_key: str, before: str, after: str) -> dict:
    """:func:`mcnemar_exact` of ``before`` against ``after``, pairing the rows of the two conditions by prompt.

    >>> rows = [{"c": "a", "p": i, "v": True} for i in range(6)] + [{"c": "b", "p": i, "v": i == 0} for i in range(6)]
    >>> paired_test(rows, "c", "p", "v", "a", "b")
    {'before': 'a', 'after': 'b', 'n_pairs': 6, 'changed_to_true': 0, 'changed_to_false': 5, 'p_value': 0.0625}
    """
    verdicts: dict[str, dict] = {before: {}, after: {}}
    for row in rows:
        if row[condition_key] in verdicts:
            verdicts[row[condition_key]][row[prompt_key]] = bool(row[verdict_key])
    shared = [p for p in verdicts[before] if p in verdicts[after]]
    test = mcnemar_exact([verdicts[before][p] for p in shared], [verdicts[after][p] for p in shared])
    return {"before": before, "after": after, **test}


def format_paired(test: dict) -> str:
    """One line for a :func:`paired_test`.

    >>> format_paired({"before": "a", "after": "b", "n_pairs": 6, "changed_to_true": 0, "changed_to_false": 5, "p_value": 0.0625})
    'a -> b on the same 6 prompts: 5 stop refusing, 0 start; exact McNemar p = 0.0625'
    """
    return (
        f"{test['before']} -> {test['after']} on the same {test['n_pairs']} prompts: {test['changed_to_false']} stop "
        f"refusing, {test['changed_to_true']} start; exact McNemar p = {test['p_value']:.3g}"
    )
