"""Prompt sets of several languages: the bundled multilingual set, PolyRefuse, or the user's own
files in any language (:mod:`mechref.data.languages`: a folder per language, or one CSV/JSON
table with a column per language).

Each language gets harmful and harmless train prompts (for its refusal vector and its refusal
tokens) and test prompts (for the audit and the transfer matrix). With PolyRefuse, harmless
test prompts of Chinese (which PolyRefuse lacks) are drawn from its harmless val split instead,
and that substitution is recorded. Whether the languages' prompts are aligned (same index, same
source prompt) is recorded too: a table's are, a folder per language's are not known to be.

>>> sets = load_language_sets(["en", "de"], n_train=8, n_test=4)
>>> len(sets["de"].harmful_train), len(sets["de"].harmless_test), sets["de"].source
(8, 4, 'bundled')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mechref.data.languages import looks_like_user_prompts, read_language_prompts
from mechref.data.prompts import LABELS, POLYREFUSE_LANGUAGES, PromptSet, load_polyrefuse, multilingual, multilingual_languages
from mechref.errors import DataFormatError


@dataclass
class LanguageSets:
    language: str
    harmful_train: PromptSet
    harmless_train: PromptSet
    harmful_test: PromptSet
    harmless_test: PromptSet
    source: str
    notes: list[str] = field(default_factory=list)
    aligned: bool = True  # same index, same source prompt, across the languages of a study

    @property
    def has_harmless(self) -> bool:
        """Whether the language has harmless prompts (not so with ``--harmful-only``)."""
        return len(self.harmless_train) > 0 and len(self.harmless_test) > 0

    def describe(self) -> dict:
        """Where the prompts came from and how many of each set, for ``summary.json``."""
        return {
            "source": self.source,
            "notes": self.notes,
            "aligned": self.aligned,
            **{
                name: getattr(self, name).describe()
                for name in ("harmful_train", "harmless_train", "harmful_test", "harmless_test")
            },
        }


def is_polyrefuse(root: Path) -> bool:
    """Whether ``root`` is laid out as PolyRefuse's release (``en/harmful_train.json`` and translated files)."""
    return (root / "en" / "harmful_train.json").is_file() and any(root.glob("harmful_*_translated_*.json"))


def load_language_sets(
    languages: Sequence[str] | None,
    data: str | Path | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 42,
    harmless_data: str | Path | None = None,
    harmful_only: bool = False,
) -> dict[str, LanguageSets]:
    """Train and test prompts per language: the bundled set (``data=None``), a PolyRefuse folder, or
    the user's own prompts (a CSV/JSON table with a column per language, or a folder per language).
    ``languages=None``: every language of the data (the bundled set's eight). ``harmless_data``: the
    harmless prompts from another source of the user's (same layouts), for data with harmful prompts
    only; the classes are then not aligned with each other, and each language's notes say so.
    ``harmful_only``: the user's data has harmful prompts only and no harmless source; every
    language's harmless sets are empty (:attr:`LanguageSets.has_harmless`).

    ``n_train`` prompts per class are sampled (seeded, the same indices in every language, so the
    sets stay aligned) and the first ``n_test`` test prompts are kept.
    """
    if harmless_data is not None and (data is None or not looks_like_user_prompts(data)):
        raise DataFormatError(
            "--harmless-data pairs a user's harmful prompts (--data: a table or a folder per language) with harmless "
            "ones from another source; give --data too"
        )
    user_data = data is not None and looks_like_user_prompts(data) and not (Path(data).is_dir() and is_polyrefuse(Path(data)))
    if harmful_only and (not user_data or harmless_data is not None):
        raise DataFormatError(
            "--harmful-only is for a user's --data (a table or a folder per language) without harmless prompts and "
            "without --harmless-data"
        )
    if user_data:
        return _user_sets(Path(data), languages, n_train, n_test, seed, harmless_data, harmful_only)  # type: ignore[arg-type]
    languages = list(dict.fromkeys(languages if languages is not None else multilingual_languages()))
    if not languages:
        raise ValueError("no languages given")
    out = {}
    for language in languages:
        if data is None:
            if language not in multilingual_languages():
                raise DataFormatError(
                    f"the bundled multilingual set has no language {language!r} (it has "
                    f"{', '.join(multilingual_languages())}); pass --data with a PolyRefuse folder for others"
                )
            get = lambda label, split, language=language: multilingual(label, split, language)
            source, notes = "bundled", list[str]()
        else:
            root = Path(data)
            if not root.exists():
                raise DataFormatError(f"--data {root} does not exist")
            if not root.is_dir() or not is_polyrefuse(root):
                raise DataFormatError(
                    f"{root} is neither a PolyRefuse folder, a folder with a folder per language ({root}/vi/harmful_train.json) "
                    "nor a CSV or JSON table with a column per language; --data takes one of them"
                )
            if language not in POLYREFUSE_LANGUAGES:
                raise DataFormatError(f"PolyRefuse has no language {language!r}; it has {', '.join(POLYREFUSE_LANGUAGES)}")
            notes = []

            def get(label, split, language=language, notes=notes, root=root):
                if language == "zh" and label == "harmless" and split == "test":
                    notes.append("zh harmless test: PolyRefuse has none; its harmless val split is used")
                    return load_polyrefuse(root, language, label, "val")
                return load_polyrefuse(root, language, label, split)

            source = f"polyrefuse:{root}"
        sets: dict[str, PromptSet] = {}
        for label in ("harmful", "harmless"):
            train, test = get(label, "train"), get(label, "test")
            sets[f"{label}_train"] = train.sample(n_train, seed) if n_train else train
            sets[f"{label}_test"] = test.take(min(n_test, len(test))) if n_test else test
        out[language] = _language_sets(language, sets, source, notes)
    return out


def _language_sets(
    language: str, sets: dict[str, PromptSet], source: str, notes: list[str], aligned: bool = True
) -> LanguageSets:
    return LanguageSets(
        language,
        harmful_train=sets["harmful_train"],
        harmless_train=sets["harmless_train"],
        harmful_test=sets["harmful_test"],
        harmless_test=sets["harmless_test"],
        source=source,
        notes=notes,
        aligned=aligned,
    )


def _user_sets(
    path: Path,
    languages: Sequence[str] | None,
    n_train: int | None,
    n_test: int | None,
    seed: int,
    harmless_data: str | Path | None = None,
    harmful_only: bool = False,
) -> dict[str, LanguageSets]:
    wanted = list(dict.fromkeys(languages)) if languages is not None else None
    only_harmful = harmless_data is not None or harmful_only
    prompts = read_language_prompts(path, wanted, labels=("harmful",) if only_harmful else LABELS)
    source_of = dict.fromkeys(LABELS, prompts)
    if harmless_data is not None:
        source_of["harmless"] = read_language_prompts(harmless_data, prompts.languages, labels=("harmless",))
    out = {}
    for language in prompts.languages:
        sets: dict[str, PromptSet] = {}
        for label in ("harmful", "harmless"):
            if label == "harmless" and harmful_only:
                for split in ("train", "test"):
                    sets[f"harmless_{split}"] = PromptSet([], "harmless", split, language, source=f"none ({path})")
                continue
            source = source_of[label]
            train, test = source.get(language, label, "train"), source.get(language, label, "test")
            if n_train is not None and n_train > len(train):
                raise DataFormatError(
                    f"{path}: {language} has {len(train)} {label} train prompts, fewer than the {n_train} asked for; "
                    f"pass --n-train {len(train)} (or fewer), or add prompts"
                )
            sets[f"{label}_train"] = train.sample(n_train, seed) if n_train else train
            sets[f"{label}_test"] = test.take(min(n_test, len(test))) if n_test else test
        notes = [] if prompts.aligned else [f"{path}: a folder per language; its prompts are not known to be aligned"]
        if harmless_data is not None:
            notes.append(f"harmless prompts from {harmless_data}, another source than the harmful ones: not aligned")
        if harmful_only:
            notes.append("harmful prompts only (--harmful-only): no harmless prompts, so no refusal vector of its own")
        aligned = prompts.aligned and harmless_data is None
        out[language] = _language_sets(language, sets, f"{prompts.layout}:{path}", notes, aligned)
    return out


#: A language whose prompts take more tokens than this per character is flagged: a byte-level tokenizer
#: splits a script it never learned into the UTF-8 bytes of each character (2-4 tokens each). On the
#: embedded model's tokenizer (benchmarks/results/tokenization.json): English 0.23, Japanese 0.62,
#: Chinese 0.66, Yoruba 0.66; Hindi 0.93, Bengali 1.05, Javanese script 1.53.
TOKENS_PER_CHARACTER_FLAG = 0.9


def tokenization(tokenizer, sets: dict[str, LanguageSets]) -> dict[str, dict]:
    """Per language: the tokens per character of all its prompts, its unknown tokens, and whether the
    tokenizer handles it poorly (above :data:`TOKENS_PER_CHARACTER_FLAG`, or any unknown token).

    >>> from mechref.testing import tiny_tokenizer
    >>> report = tokenization(tiny_tokenizer(), load_language_sets(["en", "zh"], n_train=4, n_test=2))
    >>> report["en"]["poorly_tokenized"], report["zh"]["poorly_tokenized"]
    (False, True)
    """
    unknown = getattr(tokenizer, "unk_token_id", None)
    out = {}
    for language, language_sets in sets.items():
        texts = [
            text
            for name in ("harmful_train", "harmless_train", "harmful_test", "harmless_test")
            for text in getattr(language_sets, name).instructions
        ]
        ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        characters = sum(len(text) for text in texts)
        per_character = sum(len(x) for x in ids) / max(characters, 1)
        n_unknown = sum(1 for x in ids for i in x if unknown is not None and i == unknown)
        out[language] = {
            "tokens_per_character": round(per_character, 3),
            "unknown_tokens": n_unknown,
            "poorly_tokenized": per_character > TOKENS_PER_CHARACTER_FLAG or n_unknown > 0,
        }
    return out
