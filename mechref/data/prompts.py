"""The prompt-set type and its loaders.

A :class:`PromptSet` is a list of instructions with a label (harmful | harmless), a split
(train | val | test) and a language. mechref ships an English set written for it; the
reference datasets (the refusal-direction splits of Arditi et al., PolyRefuse of Wang et al.)
are read from wherever the user keeps them, never copied into the package.

>>> train = bundled("harmful", "train")
>>> len(train), train.label, train.split, train.language
(128, 'harmful', 'train', 'en')
>>> len(train.sample(16, seed=42)), train.sample(16, seed=42) == train.sample(16, seed=42)
(16, True)
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal, overload

from mechref.errors import DataFormatError
from mechref.framework.io import fingerprint, read_user_json

if TYPE_CHECKING:
    pass

Label = Literal["harmful", "harmless"]
Split = Literal["train", "val", "test"]
LABELS: tuple[Label, ...] = ("harmful", "harmless")
SPLITS: tuple[Split, ...] = ("train", "val", "test")


@dataclass
class PromptSet(SequenceABC[str]):
    """Instructions of one class, split and language, with where they came from."""

    instructions: list[str]
    label: str
    split: str
    language: str = "en"
    source: str = "custom"
    categories: list[str | None] = field(default_factory=list)

    def __post_init__(self):
        if self.label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {self.label!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if not self.categories:
            self.categories = [None] * len(self.instructions)
        if len(self.categories) != len(self.instructions):
            raise ValueError("categories must have one entry per instruction")

    def __len__(self) -> int:
        return len(self.instructions)

    def __iter__(self) -> Iterator[str]:
        return iter(self.instructions)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> PromptSet: ...
    def __getitem__(self, index: int | slice) -> str | PromptSet:
        if isinstance(index, slice):
            return replace(self, instructions=self.instructions[index], categories=self.categories[index])
        return self.instructions[index]

    def __eq__(self, other) -> bool:
        return isinstance(other, PromptSet) and self.instructions == other.instructions and self.label == other.label

    def fingerprint(self) -> str:
        """A hash of the instructions, for manifests."""
        return fingerprint(self.instructions)

    def sample(self, n: int | None, seed: int = 42) -> PromptSet:
        """``n`` instructions drawn without replacement with ``random.Random(seed)`` (all if ``n`` is None)."""
        if n is None or n >= len(self):
            if n is not None and n > len(self):
                raise DataFormatError(f"asked for {n} prompts but the {self.label} {self.split} set has only {len(self)}")
            return self
        if n < 1:
            raise DataFormatError(f"n must be at least 1, got {n}")
        index = sorted(random.Random(seed).sample(range(len(self)), n))
        return replace(self, instructions=[self.instructions[i] for i in index], categories=[self.categories[i] for i in index])

    def take(self, n: int) -> PromptSet:
        """The first ``n`` instructions."""
        return self[:n]

    def describe(self) -> dict:
        """Label, split, language, source and count, for ``summary.json``."""
        return {
            "label": self.label,
            "split": self.split,
            "language": self.language,
            "source": self.source,
            "n": len(self),
            "fingerprint": self.fingerprint(),
        }


# ----- bundled data -------------------------------------------------------------------------
def bundled_languages() -> list[str]:
    """The languages with bundled prompt sets."""
    folder = resources.files("mechref.data") / "prompts"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def bundled(label: Label, split: Split, language: str = "en") -> PromptSet:
    """The prompt set that ships with mechref (written for it, not drawn from public datasets)."""
    if label not in LABELS or split not in SPLITS:
        raise ValueError(f"label must be one of {LABELS} and split one of {SPLITS}, got {label!r}, {split!r}")
    path = resources.files("mechref.data") / "prompts" / f"{language}.json"
    if not path.is_file():
        raise DataFormatError(f"no bundled prompts for language {language!r}; bundled: {', '.join(bundled_languages())}")
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = _validate_rows(data[label][split], f"bundled {language}.json [{label}][{split}]")
    return PromptSet(
        instructions=[r["instruction"] for r in rows],
        label=label,
        split=split,
        language=language,
        source=f"mechref:{language}",
        categories=[r.get("category") for r in rows],
    )


def multilingual_languages() -> list[str]:
    """Languages of the bundled multilingual set (aligned by index across languages)."""
    folder = resources.files("mechref.data") / "multilingual"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def multilingual(label: Label, split: Literal["train", "test"], language: str) -> PromptSet:
    """The bundled multilingual set: 64 harmful and 64 harmless instructions per language,
    written for mechref, line ``id`` saying the same thing in every language (48 train, 16 test).

    >>> de = multilingual("harmful", "test", "de")
    >>> len(de), de.language, len(multilingual("harmless", "train", "yo"))
    (16, 'de', 48)
    """
    if label not in LABELS or split not in ("train", "test"):
        raise ValueError(f"label must be one of {LABELS} and split 'train' or 'test', got {label!r}, {split!r}")
    path = resources.files("mechref.data") / "multilingual" / f"{language}.json"
    if not path.is_file():
        raise DataFormatError(
            f"no bundled multilingual prompts for language {language!r}; bundled: "
            f"{', '.join(multilingual_languages())} (PolyRefuse covers more: load_polyrefuse)"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = _validate_rows(data[label][split], f"bundled multilingual/{language}.json [{label}][{split}]")
    return PromptSet(
        instructions=[r["instruction"] for r in rows],
        label=label,
        split=split,
        language=language,
        source=f"mechref-multilingual:{language}",
    )


# ----- files --------------------------------------------------------------------------------
def _validate_rows(rows, where: str, key: str = "instruction") -> list[dict]:
    if not isinstance(rows, list):
        raise DataFormatError(f"{where}: expected a JSON list of objects with an {key!r} field, got {type(rows).__name__}")
    if not rows:
        raise DataFormatError(f"{where}: the list is empty; a prompt set needs at least one instruction")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataFormatError(f'{where}, row {i}: expected an object like {{"{key}": "..."}}, got {type(row).__name__}')
        if key not in row:
            raise DataFormatError(f"{where}, row {i}: missing the {key!r} field (has: {', '.join(map(str, row)) or 'nothing'})")
        if not isinstance(row[key], str) or not row[key].strip():
            raise DataFormatError(f"{where}, row {i}: {key!r} must be a non-empty string, got {row[key]!r}")
    return rows


def load_prompt_file(path: str | Path, label: Label, split: Split, language: str = "en", key: str = "instruction") -> PromptSet:
    """Read a JSON list of ``{"instruction": ..., "category": ...}`` objects.

    A plain JSON list of strings is accepted too. Errors name the file and the row.
    """
    path = Path(path)
    data = read_user_json(path, "prompt file")
    if isinstance(data, list) and data and all(isinstance(x, str) for x in data):
        data = [{key: x} for x in data]
    rows = _validate_rows(data, str(path), key)
    return PromptSet(
        instructions=[r[key] for r in rows],
        label=label,
        split=split,
        language=language,
        source=str(path),
        categories=[r.get("category") for r in rows],
    )


def load_refusal_direction_splits(root: str | Path) -> dict[tuple[str, str], PromptSet]:
    """The splits of Arditi et al. from a folder holding ``{harmful,harmless}_{train,val,test}.json``.

    ``root`` may be that folder or one above it (``.../refusal_direction``).
    Returns ``{(label, split): PromptSet}``.
    """
    root = Path(root)
    folder = root if (root / "harmful_train.json").is_file() else root / "splits"
    if not (folder / "harmful_train.json").is_file():
        raise DataFormatError(f"{root}: expected harmful_train.json (or splits/harmful_train.json) there")
    return {
        (label, split): load_prompt_file(folder / f"{label}_{split}.json", label, split) for label in LABELS for split in SPLITS
    }


POLYREFUSE_LANGUAGES = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "ru", "th", "yo", "zh")


def load_polyrefuse(root: str | Path, language: str, label: Label, split: Split) -> PromptSet:
    """One PolyRefuse file (Wang et al. 2025) from its release layout.

    English train/val live in ``en/``; translated test files carry the translation in
    ``instruction_translated``. Chinese harmless prompts are a different Alpaca sample (not
    aligned with the other languages) and have no test split: asking for it raises.
    """
    root = Path(root)
    if language not in POLYREFUSE_LANGUAGES:
        raise DataFormatError(f"PolyRefuse has no language {language!r}; it has {', '.join(POLYREFUSE_LANGUAGES)}")
    if language == "en":
        name = {
            "harmful": f"harmful_{split}.json",
            "harmless": "harmless_test_500_sampled.json" if split == "test" else f"harmless_{split}_200_sampled.json",
        }[label]
        path, key = root / "en" / name, "instruction"
    else:
        if language == "zh" and label == "harmless" and split == "test":
            raise DataFormatError("PolyRefuse has no Chinese harmless test file; use zh harmless train/val, or another language")
        path = root / f"{label}_{split}_translated_{language}.json"
        key = "instruction_translated" if split == "test" else "instruction"
    prompts = load_prompt_file(path, label, split, language, key=key)
    prompts.source = f"polyrefuse:{path}"
    return prompts


def load_from_hub(
    repo_id: str,
    filename: str,
    label: Label,
    split: Split,
    language: str = "en",
    key: str = "instruction",
    revision: str | None = None,
) -> PromptSet:
    """Download a JSON prompt file from a Hugging Face dataset repository (needs the internet)."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision)
    except Exception as error:
        raise DataFormatError(
            f"could not download {filename} from the dataset {repo_id!r} ({type(error).__name__}: {error}); "
            "offline? Download it elsewhere and use load_prompt_file(path, ...)"
        ) from error
    return load_prompt_file(path, label, split, language, key)
