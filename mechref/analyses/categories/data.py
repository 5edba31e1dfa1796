"""Harmful prompts grouped by harm category, each category split into the prompts that make its
direction (``fit``) and the prompts its refusal is measured on (``eval``), so that no category is
measured on the prompts that made its own direction.

A category with fewer than ``min_prompts`` prompts gives no stable direction: such categories are
merged into one ``other`` group, and if even that is too small they are left out; both are
reported with the minimum that applied.

>>> data = load_category_data(min_prompts=8)
>>> data.source, len(data.categories) > 5, all(len(c.fit) >= 4 and len(c.eval) >= 4 for c in data.categories)
('bundled', True, True)
>>> data.merged[:3]   # bundled categories with fewer than 8 prompts, merged into "other"
['academic_dishonesty', 'animal_cruelty', 'exploitation']
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mechref.data.prompts import PromptSet, bundled, load_prompt_file, load_refusal_direction_splits
from mechref.errors import DataFormatError
from mechref.framework.io import fingerprint

OTHER = "other"


@dataclass
class Category:
    """One harm category: its direction's prompts and its evaluation prompts."""

    name: str
    fit: list[str]
    eval: list[str]
    members: list[str] = field(default_factory=list)  # the original categories merged into it ("other")

    def describe(self) -> dict:
        """Prompt counts of this category (all, fit half, eval half) and the source categories merged into it,
        for ``summary.json``."""
        return {"n": len(self.fit) + len(self.eval), "fit": len(self.fit), "eval": len(self.eval), "members": self.members}


@dataclass
class CategoryData:
    """Categories, the harmless prompts for the shared mean and for KL, and where they came from."""

    categories: list[Category]
    harmless: list[str]  # the mean subtracted from every category's (difference in means)
    harmless_kl: list[str]  # next-token KL of an ablation is measured on these (not the mean's prompts)
    source: str
    min_prompts: int
    merged: list[str]  # categories below min_prompts, merged into "other"
    left_out: dict[str, int]  # categories (or "other") still below min_prompts: name -> prompts
    unlabelled: int  # harmful prompts without a category (not used)

    @property
    def names(self) -> list[str]:
        """The categories' names, in their order."""
        return [c.name for c in self.categories]

    def fingerprint(self) -> str:
        """A hash of every prompt and its split: a stage computed on other prompts is never resumed."""
        return fingerprint(
            {
                "categories": [(c.name, c.fit, c.eval) for c in self.categories],
                "harmless": self.harmless,
                "harmless_kl": self.harmless_kl,
            }
        )

    def describe(self) -> dict:
        """Where the prompts came from and each category's counts, for ``summary.json``."""
        return {
            "source": self.source,
            "min_prompts_per_category": self.min_prompts,
            "categories": {c.name: c.describe() for c in self.categories},
            "merged_into_other": self.merged,
            "left_out_too_few_prompts": self.left_out,
            "harmful_without_category": self.unlabelled,
            "n_harmless_mean": len(self.harmless),
            "n_harmless_kl": len(self.harmless_kl),
        }


def _harmful_rows(harmful: str | Path | None, data: str | Path | None) -> tuple[list[PromptSet], str]:
    if harmful is not None and data is not None:
        raise DataFormatError("give --harmful or --data, not both")
    if harmful is not None:
        return [load_prompt_file(harmful, "harmful", "test")], f"file:{harmful}"
    if data is not None:
        splits = load_refusal_direction_splits(data)
        return [splits[("harmful", split)] for split in ("train", "val", "test")], f"refusal_direction:{data}"
    return [bundled("harmful", split) for split in ("train", "val", "test")], "bundled"


def _harmless(harmless: str | Path | None, data: str | Path | None) -> tuple[list[str], list[str]]:
    if harmless is not None:
        prompts = load_prompt_file(harmless, "harmless", "train").instructions
        if len(prompts) < 8:
            raise DataFormatError(f"{harmless} holds {len(prompts)} harmless prompts; the mean and the KL need at least 8")
        half = len(prompts) // 2  # the mean's prompts and the KL's prompts kept apart
        return prompts[:half], prompts[half:]
    if data is not None:
        splits = load_refusal_direction_splits(data)
        return splits[("harmless", "train")].instructions, splits[("harmless", "val")].instructions
    return bundled("harmless", "train").instructions, bundled("harmless", "val").instructions


def load_category_data(
    harmful: str | Path | None = None,
    data: str | Path | None = None,
    harmless: str | Path | None = None,
    *,
    min_prompts: int = 8,
    max_per_category: int | None = None,
    n_harmless: int | None = None,
    n_kl: int | None = None,
    only: Sequence[str] | None = None,
    seed: int = 42,
) -> CategoryData:
    """Harmful prompts by category: the bundled English set (every split), a JSON file of
    ``{"instruction", "category"}`` rows (``harmful``) or a refusal_direction splits folder (``data``).

    Each category's prompts are shuffled with ``seed`` (at most ``max_per_category`` kept) and
    halved: the first half makes its direction, the second half measures it. ``only`` keeps the
    named categories (before merging: name the original categories).
    """
    if min_prompts < 4:
        raise DataFormatError(f"min_prompts must be at least 4 (2 to make a direction, 2 to measure it), got {min_prompts}")
    sets, source = _harmful_rows(harmful, data)
    grouped: dict[str, list[str]] = {}
    unlabelled = 0
    for prompts in sets:
        for text, category in zip(prompts.instructions, prompts.categories):
            if category is None or not str(category).strip():
                unlabelled += 1
                continue
            bucket = grouped.setdefault(str(category).strip(), [])
            if text not in bucket:
                bucket.append(text)
    if not grouped:
        raise DataFormatError(
            f"no harmful prompt in {source} has a 'category' field: the category analysis needs one per prompt "
            '(a JSON list of {"instruction": ..., "category": ...})'
        )
    if only is not None:
        missing = [name for name in only if name not in grouped]
        if missing:
            raise DataFormatError(
                f"{source} has no category {', '.join(map(repr, missing))}; it has {', '.join(sorted(grouped))}"
            )
        grouped = {name: rows for name, rows in grouped.items() if name in only}
    if OTHER in grouped:
        raise DataFormatError(f"a category is named {OTHER!r}, the name mechref gives to merged small categories; rename it")
    big = {name: rows for name, rows in grouped.items() if len(rows) >= min_prompts}
    merged = sorted(name for name in grouped if name not in big)
    left_out: dict[str, int] = {}
    if merged:
        other = [text for name in merged for text in grouped[name]]
        if len(other) >= min_prompts:
            big[OTHER] = other
        else:
            left_out[OTHER] = len(other)
    if len(big) < 2:
        raise DataFormatError(
            f"{source}: only {len(big)} categories have at least {min_prompts} prompts; the analysis compares "
            "categories and needs two (lower --min-prompts, or give more prompts per category)"
        )
    rng = random.Random(seed)
    categories = []
    for name in sorted(big, key=lambda n: (n == OTHER, -len(big[n]), n)):
        rows = list(big[name])
        rng.shuffle(rows)
        if max_per_category is not None:
            rows = rows[:max_per_category]
        half = (len(rows) + 1) // 2
        categories.append(Category(name, rows[:half], rows[half:], merged if name == OTHER else []))
    mean_prompts, kl_prompts = _harmless(harmless, data)
    if n_harmless is not None:
        mean_prompts = mean_prompts[:n_harmless]
    if n_kl is not None:
        kl_prompts = kl_prompts[:n_kl]
    return CategoryData(categories, mean_prompts, kl_prompts, source, min_prompts, merged, left_out, unlabelled)
