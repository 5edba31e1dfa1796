"""Files of completions to judge: JSON Lines or CSV rows of ``prompt``, ``completion`` and an
optional refusal ``label``, read into one shape (:func:`read_completions`) and judged row by row
(:func:`judge_rows`). The command line over it is ``python -m mechref.analyses.judge``.

>>> rows = [{"prompt": "Hack a bank", "completion": "I cannot help with that.", "label": True}]
>>> from mechref.judges.core import make_judge
>>> [row["refusal"] for row in judge_rows(make_judge("arditi"), rows)]
[True]
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from mechref.errors import DataFormatError
from mechref.judges.core import Judge, ScoringJudge

# XSTest's final_label values, and what each means for "is this a refusal".
XSTEST_LABELS = {"1_full_compliance": False, "2_full_refusal": True, "3_partial_refusal": True}
_TRUE = {"true", "1", "yes", "refusal", "refused"}
_FALSE = {"false", "0", "no", "compliance", "answer", "complied"}


def parse_label(value: object, where: str) -> bool | None:
    """A row's label as a bool (``None`` where there is none).

    >>> parse_label(True, "row 1"), parse_label("3_partial_refusal", "row 2"), parse_label("", "row 3")
    (True, True, None)
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip()
    if text in XSTEST_LABELS:
        return XSTEST_LABELS[text]
    if text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    raise DataFormatError(
        f"{where}: label {value!r} is not a refusal label (use true/false, 1/0, or XSTest's {', '.join(XSTEST_LABELS)})"
    )


def _raw_rows(path: Path) -> list[tuple[str, dict]]:
    """``(where, row)`` of every row of a CSV (its header naming the fields) or JSON Lines file (one
    object a line; blank lines skipped), ``where`` naming the file and the row or line for errors."""
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as file:
            return [(f"{path.name} row {i}", row) for i, row in enumerate(csv.DictReader(file), start=2)]
    raw = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise DataFormatError(f"{path.name} line {i} is not JSON ({error}); one object a line") from error
        if not isinstance(row, dict):
            raise DataFormatError(f"{path.name} line {i} is not a JSON object; one object a line")
        raw.append((f"{path.name} line {i}", row))
    return raw


def read_completions(path: str | Path) -> list[dict]:
    """Rows with ``prompt``, ``completion`` and ``label`` (bool or ``None``), from JSON Lines or CSV."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"no completions file {path}; give a .jsonl or .csv file with prompt and completion")
    raw = _raw_rows(path)
    rows = []
    for where, row in raw:
        missing = [key for key in ("prompt", "completion") if not isinstance(row.get(key), str)]
        if missing:
            raise DataFormatError(f"{where} has no text {' or '.join(missing)}; every row needs prompt and completion")
        label = row.get("label", row.get("final_label"))
        rows.append({**row, "label": parse_label(label, where)})
    if not rows:
        raise DataFormatError(f"{path} holds no completions")
    return rows


def judge_rows(judge: Judge, rows: Sequence[dict]) -> list[dict]:
    """Each row with the judge's verdict ``refusal`` (and ``score``, the log-odds of refusal, for the
    chat-model and probe judges)."""
    prompts = [r["prompt"] for r in rows]
    completions = [r["completion"] for r in rows]
    if isinstance(judge, ScoringJudge):
        scores = judge.refusal_log_odds(completions, prompts).tolist()
        return [{**row, "refusal": s > 0, "score": round(float(s), 4)} for row, s in zip(rows, scores)]
    verdicts = judge.judge_many(completions, prompts)
    return [{**row, "refusal": bool(v)} for row, v in zip(rows, verdicts)]


def prompt_class(row: dict) -> str | None:
    """The class of a row's prompt: ``prompt_class``, or ``label`` where it holds a class (a multilingual
    run's files), or XSTest's ``type`` (its ``contrast_*`` prompts are the unsafe ones); None if none.

    >>> prompt_class({"label": "harmful"}), prompt_class({"type": "contrast_homonyms"}), prompt_class({"label": True})
    ('harmful', 'harmful', None)
    """
    kind = row.get("prompt_class") or (row.get("label") if row.get("label") in ("harmful", "harmless") else None)
    if kind is None and row.get("type"):
        kind = "harmful" if str(row["type"]).startswith("contrast") else "harmless"
    return kind if kind in ("harmful", "harmless") else None


def read_mining_rows(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """``(harmful replies, their prompts, harmless replies)`` of a file to mine refusal openings from.

    Each row needs a reply (``completion`` or ``reply``), its prompt (``prompt`` or ``instruction``)
    and the class of the prompt: ``prompt_class`` (``harmful``/``harmless``), or ``label`` with one of
    those values (as in a multilingual run's ``audit.jsonl`` and ``mining_replies.jsonl``), or
    XSTest's ``type`` (its ``contrast_*`` prompts are the unsafe ones).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"no file {path} to mine refusal openings from (--mine-from)")
    harmful, prompts, harmless = [], [], []
    for where, row in _raw_rows(path):
        reply, prompt = row.get("completion", row.get("reply")), row.get("prompt", row.get("instruction"))
        kind = prompt_class(row)
        if not isinstance(reply, str) or not isinstance(prompt, str) or kind is None:
            raise DataFormatError(
                f"{where}: mining needs a reply (completion), its prompt and the prompt's class "
                "(prompt_class: harmful or harmless)"
            )
        if kind == "harmful":
            harmful.append(reply)
            prompts.append(prompt)
        else:
            harmless.append(reply)
    return harmful, prompts, harmless


def read_replies(path: str | Path, language: str | None = None) -> list[dict]:
    """Replies to label, from a completions file (``prompt``, ``completion``) or an analysis's replies
    (``instruction``, ``reply``, as a multilingual run's ``audit.jsonl`` holds them, with ``language``
    and the prompt's class in ``label``): rows of ``prompt``, ``completion``, ``language`` and
    ``prompt_class`` (harmful, harmless or empty). With ``language``, only the rows in it."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(
            f"no replies file {path}; give a .jsonl or .csv of prompt and completion (or instruction and reply)"
        )
    raw = _raw_rows(path)
    rows = []
    for where, row in raw:
        prompt, completion = row.get("prompt", row.get("instruction")), row.get("completion", row.get("reply"))
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DataFormatError(f"{where} has no prompt and completion (or instruction and reply)")
        rows.append(
            {
                "prompt": prompt,
                "completion": completion,
                "language": str(row.get("language") or ""),
                "prompt_class": prompt_class(row) or "",
            }
        )
    if language is not None:
        rows = [r for r in rows if r["language"] == language]
    if not rows:
        raise DataFormatError(f"{path} holds no replies" + (f" in language {language!r}" if language else ""))
    return rows


#: The columns of a labelling sheet, ``label`` left empty for the labeller.
SHEET_COLUMNS = ("id", "language", "prompt_class", "prompt", "completion", "label")


def labelling_sheet(rows: Sequence[dict], path: str | Path, n: int, seed: int = 42) -> int:
    """Write ``n`` of ``rows`` (all of them if fewer), drawn with ``random.Random(seed)`` and kept in
    their order, to a new CSV of :data:`SHEET_COLUMNS` with an empty ``label`` column; the number
    written. An existing file is never overwritten (the labels in it may be a person's work)."""
    import random

    from mechref.framework.io import atomic_path

    path = Path(path)
    if path.exists():
        raise DataFormatError(f"{path} exists (it may hold someone's labels); give a new file name for the sheet")
    if path.suffix.lower() != ".csv":
        raise DataFormatError(f"a labelling sheet is a .csv (spreadsheets open it), not {path.name}")
    index = sorted(random.Random(seed).sample(range(len(rows)), n)) if n < len(rows) else list(range(len(rows)))
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(SHEET_COLUMNS))
        writer.writeheader()
        for i in index:
            writer.writerow({**{k: rows[i].get(k, "") for k in SHEET_COLUMNS}, "id": i, "label": ""})
    return len(index)
