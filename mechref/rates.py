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
from typing import Iterable

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
        return self.k / self.n

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson score interval (sensible at k = 0 and k = n, unlike the normal one)."""
        p, n, z = self.value, self.n, Z_95
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def to_dict(self) -> dict:
        low, high = self.interval
        return {"rate": round(self.value, 4), "k": self.k, "n": self.n, "ci95": [round(low, 4), round(high, 4)]}

    def __str__(self) -> str:
        return f"{self.value:.2f} ({self.k}/{self.n})"


def rate_or_none(outcomes: Iterable[bool]) -> Rate | None:
    """:meth:`Rate.of`, or None for no outcomes (e.g. a subset that happens to be empty)."""
    values = list(outcomes)
    return Rate.of(values) if values else None
