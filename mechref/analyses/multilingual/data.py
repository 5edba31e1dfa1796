"""Prompt sets of several languages, from the bundled multilingual set or PolyRefuse.

Each language gets harmful and harmless train prompts (for its refusal vector and its refusal
tokens) and test prompts (for the audit and the transfer matrix). With PolyRefuse, harmless
test prompts of Chinese (which PolyRefuse lacks) are drawn from its harmless val split instead,
and that substitution is recorded.

>>> sets = load_language_sets(["en", "de"], n_train=8, n_test=4)
>>> len(sets["de"].harmful_train), len(sets["de"].harmless_test), sets["de"].source
(8, 4, 'bundled')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mechref.data.prompts import POLYREFUSE_LANGUAGES, PromptSet, load_polyrefuse, multilingual, multilingual_languages
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

    def describe(self) -> dict:
        """Where the prompts came from and how many of each set, for ``summary.json``."""
        return {
            "source": self.source,
            "notes": self.notes,
            **{
                name: getattr(self, name).describe()
                for name in ("harmful_train", "harmless_train", "harmful_test", "harmless_test")
            },
        }


def load_language_sets(
    languages: Sequence[str],
    data: str | Path | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 42,
) -> dict[str, LanguageSets]:
    """Train and test prompts per language: the bundled set (``data=None``) or a PolyRefuse folder.

    ``n_train`` prompts per class are sampled (seeded, the same indices in every language, so the
    sets stay aligned) and the first ``n_test`` test prompts are kept.
    """
    languages = list(dict.fromkeys(languages))
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
            if not root.is_dir():
                raise DataFormatError(
                    f"{root} is not a folder; --data takes a PolyRefuse folder (or leave it out for the bundled set)"
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
        sets = {}
        for label in ("harmful", "harmless"):
            train, test = get(label, "train"), get(label, "test")
            sets[f"{label}_train"] = train.sample(n_train, seed) if n_train else train
            sets[f"{label}_test"] = test.take(min(n_test, len(test))) if n_test else test
        out[language] = LanguageSets(language=language, source=source, notes=notes, **sets)
    return out
