"""The damage analysis's data, read where the user keeps it: XSTest's safe prompts and GSM8K problems.

Both readers check the file before any model loads and raise one-line errors that name the fix.

>>> gsm8k_final_number("She makes 9 * 2 = $18.\\n#### 18")
'18'
>>> reply_final_number("So the total is 1,250 dollars.\\n#### 1,250"), reply_final_number("The answer is 7.5.")
('1250', '7.5')
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from mechref.errors import DataFormatError
from mechref.judges.thinking import answer_part

XSTEST_COLUMNS = ("id", "prompt", "type", "label")


@dataclass(frozen=True)
class XSTestPrompt:
    id: str
    prompt: str
    type: str


def read_xstest_safe(path: str | Path, n: int) -> list[XSTestPrompt]:
    """``n`` of the safe prompts of ``xstest_prompts.csv``, spread evenly over the file.

    The file is ordered by prompt type (homonyms, figurative language, …), so the first ``n``
    would test one or two types; evenly spaced rows cover all ten. ``n`` at least the number of
    safe prompts takes them all.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"no XSTest file at {path}; give the path of xstest_prompts.csv (--xstest)")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in XSTEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(
                f"{path} has no column {', '.join(missing)}: expected XSTest's xstest_prompts.csv "
                f"(columns {', '.join(XSTEST_COLUMNS)})"
            )
        safe = [XSTestPrompt(r["id"], r["prompt"], r["type"]) for r in reader if r["label"] == "safe" and r["prompt"].strip()]
    if not safe:
        raise DataFormatError(f"{path} has no row labelled 'safe': is it XSTest's xstest_prompts.csv?")
    if n >= len(safe):
        return safe
    return [safe[(i * len(safe)) // n] for i in range(n)]


@dataclass(frozen=True)
class MathProblem:
    question: str
    answer: str  # the final number, as GSM8K writes it after '####' (commas removed)


def read_gsm8k(path: str | Path, n: int) -> list[MathProblem]:
    """The first ``n`` problems of a GSM8K JSONL file (``question`` and ``answer`` per line)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"no GSM8K file at {path}; give the path of GSM8K's test.jsonl (--gsm8k)")
    problems: list[MathProblem] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if len(problems) == n:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problems.append(MathProblem(row["question"], gsm8k_final_number(row["answer"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise DataFormatError(
                    f"{path}, line {number}: not a GSM8K row ({type(error).__name__}: {error}); each line needs "
                    "'question' and an 'answer' ending in '#### <number>'"
                ) from error
    if not problems:
        raise DataFormatError(f"{path} holds no problems")
    return problems


def gsm8k_final_number(answer: str) -> str:
    """The number after GSM8K's ``####`` marker, without thousands separators."""
    if "####" not in answer:
        raise ValueError("the answer has no '#### <number>' line")
    number = _canonical(answer.rsplit("####", 1)[1])
    if number is None:
        raise ValueError(f"no number after '####' in {answer[-40:]!r}")
    return number


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def reply_final_number(reply: str) -> str | None:
    """The final answer of a model's solution: the number after its last ``####``, else the last
    number it writes (the usual GSM8K exact-match rule); None when it writes no number. A reasoning
    model's answer is read after its thinking block (a reply that never left it has none).

    >>> reply_final_number("<think>Maybe 12? No, 3 * 4 = 13.</think> The answer is 12."), reply_final_number("<think>12")
    ('12', None)
    """
    reply = answer_part(reply)
    if "####" in reply:
        found = _canonical(reply.rsplit("####", 1)[1])
        if found is not None:
            return found
    numbers = _NUMBER.findall(reply)
    return _canonical(numbers[-1]) if numbers else None


def _canonical(text: str) -> str | None:
    """The first number in ``text`` as a canonical string: no commas, no trailing zeros after a point."""
    match = _NUMBER.search(text.replace("$", ""))
    if match is None:
        return None
    number = match.group().replace(",", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return "0" if number in ("-0", "") else number


GSM8K_INSTRUCTION = (
    "{question}\n\nSolve the problem step by step. End your reply with the final answer on its own line, "
    'in the form "#### <number>".'
)
