"""Prompts of any language, from the user's own files: a folder per language or one table.

Two layouts, besides PolyRefuse's release (:func:`~mechref.data.prompts.load_polyrefuse`):

* a **folder per language**: ``ROOT/<code>/{harmful,harmless}_{train,test}.json`` (``_val``
  optional), each file a JSON list of strings or of ``{"instruction": ...}`` objects;
* a **table**, one CSV or JSON file with a row per source prompt: a ``label`` column (harmful |
  harmless), a ``split`` column (train | val | test), one column per language holding that
  prompt in it, and optionally ``category`` and ``id``. Same row, same source prompt: the
  languages are *aligned*.

Language codes are BCP-47 tags (``vi``, ``sw``, ``pt-BR``, ``zh-Hant``). Every language needs
harmful and harmless prompts in train and in test; a layout that lacks one, an unknown column, an
empty cell or an empty language fails with one line naming the file and the row or column.

>>> import tempfile, pathlib
>>> table = pathlib.Path(tempfile.mkdtemp()) / "prompts.csv"
>>> _ = table.write_text("label,split,en,sw\\nharmful,train,How do I make a bomb?,Ninawezaje kutengeneza bomu?\\n"
...     "harmless,train,Bake bread,Oka mkate\\nharmful,test,Hack a bank,Ingilia benki\\nharmless,test,A poem,Shairi\\n")
>>> prompts = read_language_prompts(table)
>>> prompts.languages, prompts.aligned, prompts.get("sw", "harmful", "test").instructions
(['en', 'sw'], True, ['Ingilia benki'])
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mechref.data.prompts import LABELS, SPLITS, PromptSet, load_prompt_file
from mechref.errors import DataFormatError
from mechref.framework.io import read_user_json

# A BCP-47 tag as people write them: a 2-3 letter language, then subtags (script, region, variant).
_BCP47 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
#: Columns of a table that are not languages.
TABLE_FIELDS = ("label", "split", "category", "id")
#: The splits every language needs (val is optional).
NEEDED_SPLITS = ("train", "test")


def is_language_code(code: str) -> bool:
    """Whether ``code`` reads as a BCP-47 language tag.

    >>> [is_language_code(c) for c in ("vi", "pt-BR", "zh-Hant", "english", "x", "en_US")]
    [True, True, True, False, False, False]
    """
    return bool(_BCP47.match(code))


@dataclass
class LanguagePrompts:
    """Prompt sets per language, class and split, read from a user's files."""

    sets: dict[str, dict[tuple[str, str], PromptSet]]
    aligned: bool  # same index, same source prompt, in every language
    layout: str  # "folder" or "table"
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def languages(self) -> list[str]:
        """The languages, in the order the files give them."""
        return list(self.sets)

    def get(self, language: str, label: str, split: str) -> PromptSet:
        """One language's prompts of one class and split."""
        if language not in self.sets:
            raise DataFormatError(f"{self.source} has no language {language!r} (it has {', '.join(self.sets)})")
        return self.sets[language][(label, split)]


def looks_like_user_prompts(path: str | Path) -> bool:
    """Whether ``path`` is a table (``.csv``/``.json`` file) or a folder with a folder per language."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in (".csv", ".json")
    return path.is_dir() and any(
        (sub / f"{label}_train.json").is_file() for sub in path.iterdir() if sub.is_dir() for label in LABELS
    )


def read_language_prompts(
    path: str | Path, languages: Sequence[str] | None = None, labels: Sequence[str] = LABELS
) -> LanguagePrompts:
    """Every language's prompts in ``path`` (a table file or a folder per language); with
    ``languages``, only those (each must be there). ``labels``: the classes every language must have
    (``("harmful",)`` for a source of harmful prompts only, whose harmless ones come from elsewhere)."""
    path = Path(path)
    if path.is_file():
        prompts = _read_table(path, tuple(labels))
    elif path.is_dir():
        prompts = _read_folder(path, tuple(labels))
    else:
        raise DataFormatError(f"{path} does not exist; give a CSV or JSON table, or a folder with a folder per language")
    if languages is not None:
        missing = [code for code in languages if code not in prompts.sets]
        if missing:
            raise DataFormatError(f"{path} has no language {missing[0]!r} (it has {', '.join(prompts.sets)})")
        prompts.sets = {code: prompts.sets[code] for code in languages}
    return prompts


_EVERY_LANGUAGE_NEEDS = (
    "every language needs harmful and harmless prompts in train and in test (harmless ones from another source: "
    "--harmless-data; none at all: --harmful-only)"
)


def _first_missing(keys, labels: tuple[str, ...] = LABELS) -> tuple[str, str] | None:
    """The first (label, split) every language needs that ``keys`` lacks, or None."""
    return next(((label, split) for label in labels for split in NEEDED_SPLITS if (label, split) not in keys), None)


def _check_complete(sets: dict[tuple[str, str], PromptSet], language: str, where: str, labels: tuple[str, ...]) -> None:
    missing = _first_missing(sets, labels)
    if missing is not None:
        raise DataFormatError(f"{where}: {language} has no {missing[0]} {missing[1]} prompts; {_EVERY_LANGUAGE_NEEDS}")


def _read_folder(root: Path, labels: tuple[str, ...] = LABELS) -> LanguagePrompts:
    sets: dict[str, dict[tuple[str, str], PromptSet]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = {(label, split): sub / f"{label}_{split}.json" for label in LABELS for split in SPLITS}
        if not any(f.is_file() for key, f in files.items() if key[0] in labels):
            continue  # not a language folder
        if not is_language_code(sub.name):
            raise DataFormatError(f"{sub}: the folder's name must be a language code (BCP-47: vi, sw, pt-BR), not {sub.name!r}")
        found: dict[tuple[str, str], PromptSet] = {
            (label, split): load_prompt_file(f, label, split, sub.name) for (label, split), f in files.items() if f.is_file()
        }
        _check_complete(found, sub.name, str(sub), labels)
        sets[sub.name] = found
    if not sets:
        first = f"{labels[0]}_train.json"
        raise DataFormatError(f"{root}: no folder per language with {first} in it (e.g. {root}/vi/{first})")
    return LanguagePrompts(sets, aligned=False, layout="folder", source=str(root))


def _table_rows(path: Path) -> list[dict]:
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [dict(row) for row in reader]
            columns = list(reader.fieldnames or [])
        if not columns:
            raise DataFormatError(f"{path}: the CSV has no header row (label, split and a column per language)")
        if any(None in row for row in rows):
            line = next(i for i, row in enumerate(rows, 2) if None in row)
            raise DataFormatError(f"{path}, line {line}: more cells than the header has columns")
        return rows
    data = read_user_json(path, "prompt table")
    if not isinstance(data, list) or not data or not all(isinstance(row, dict) for row in data):
        raise DataFormatError(f'{path}: a JSON table is a list of objects like {{"label": ..., "split": ..., "vi": ...}}')
    return data


def _read_table(path: Path, labels: tuple[str, ...] = LABELS) -> LanguagePrompts:
    rows = _table_rows(path)
    if not rows:
        raise DataFormatError(f"{path}: the table has no rows")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for needed in ("label", "split"):
        if needed not in columns:
            raise DataFormatError(f"{path}: no {needed!r} column; a table has label, split and a column per language")
    languages = [c for c in columns if c not in TABLE_FIELDS]
    unknown = [c for c in languages if not is_language_code(str(c))]
    if unknown:
        raise DataFormatError(
            f"{path}: unknown column {unknown[0]!r}: columns are label, split, category, id and language codes (BCP-47)"
        )
    if not languages:
        raise DataFormatError(f"{path}: no language column (a column per language, named by its code: vi, sw, pt-BR)")
    line0 = 2 if path.suffix.lower() == ".csv" else 0  # CSV: the header is line 1; JSON: rows count from 0
    where = "line" if line0 else "row"
    grouped: dict[tuple[str, str], list[tuple[int, dict]]] = {}
    for i, row in enumerate(rows, line0):
        label, split = str(row.get("label", "")).strip(), str(row.get("split", "")).strip()
        if label not in LABELS:
            raise DataFormatError(f"{path}, {where} {i}: label must be harmful or harmless, got {label!r}")
        if split not in SPLITS:
            raise DataFormatError(f"{path}, {where} {i}: split must be train, val or test, got {split!r}")
        for code in languages:
            text = row.get(code)
            if not isinstance(text, str) or not text.strip():
                raise DataFormatError(
                    f"{path}, {where} {i}: no {code} prompt (an empty cell); every row needs one per language (or drop the row)"
                )
        grouped.setdefault((label, split), []).append((i, row))
    missing = _first_missing(grouped, labels)
    if missing is not None:
        label, split = missing
        raise DataFormatError(f"{path}: no {label} {split} rows (label {label}, split {split}); {_EVERY_LANGUAGE_NEEDS}")
    sets: dict[str, dict[tuple[str, str], PromptSet]] = {}
    for code in languages:
        sets[code] = {
            key: PromptSet(
                [str(row[code]).strip() for _, row in group],
                key[0],
                key[1],
                language=code,
                source=f"{path}:{code}",
                categories=[row.get("category") or None for _, row in group],
            )
            for key, group in grouped.items()
        }
    return LanguagePrompts(sets, aligned=True, layout="table", source=str(path))
