"""Mutation score per core module, from the results of ``mutmut run``, with every survivor sorted.

    pip install mutmut==3.8.1
    OMP_NUM_THREADS=1 mutmut run --max-children 2   # about 40 minutes on 2 cores
    python benchmarks/mutation_scores.py     # writes benchmarks/results/reliability/mutation_scores.json

The modules and the tests are configured in ``[tool.mutmut]`` of pyproject.toml. A mutant is
*killed* when a test fails (or times out) with it in place. Each survivor is put in one class:

* ``display``: it changes only a progress bar (``tqdm`` arguments, ``progress=``, ``set_postfix``).
* ``wording``: it changes only the prose of a message (a string literal with spaces, wrapped in
  ``XX`` or re-cased); the tests check what a message names (the option, the value, the fix),
  not its wording.
* reviewed by hand and listed with the reason in ``mutation_equivalents.json``: ``equivalent``
  (same observable behaviour, e.g. ``dim=+1`` for ``dim=-1`` on a 2-D tensor), ``device`` (a
  device move that a CPU-only machine cannot observe: checked on a GPU, not by these tests),
  ``import-time`` (code run when the module is imported, before mutmut switches a mutant on),
  ``wording``.
* ``survived``: everything else: a gap in the tests.

Two scores per module: ``raw`` = killed / checked, and ``score`` = killed / (checked - set
aside), the share of the mutants that change what a CPU run computes that the tests catch.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.json")
# Mutants run by hand with mutmut's own switch (MUTANT_UNDER_TEST): those mutmut marked "no tests"
# (its record of which test calls which function missed them), against the tests that call their
# function, and the survivors of modules whose tests share module-scoped fixtures, against the
# whole test files: benchmarks/run_mutants_by_hand.sh writes this file.
BY_HAND = ROOT / "benchmarks" / "results" / "reliability" / "mutation_by_hand.json"
KILLED = {"killed", "timeout"}
ASIDE = ("display", "wording", "equivalent", "device", "import-time")


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    lines = diff.splitlines()
    minus = [line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---")]
    plus = [line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")]
    return minus, plus


def classify(diff: str) -> str | None:
    """``display`` or ``wording`` when a rule applies, else None."""
    minus, plus = changed_lines(diff)
    text = " ".join(minus + plus)
    if "tqdm(" in text or "set_postfix(" in text:
        return "display"
    if len(minus) == 1 and len(plus) == 1:
        a, b = minus[0], plus[0]
        # Only a progress flag or a progress-bar label changed.
        strip = lambda s: re.sub(r"(progress\s*(:\s*bool\s*)?=\s*[\w ]+?|desc=\"[^\"]*\"|desc=None)(?=[,)]|$)", "", s)
        if a != b and strip(a).replace(" ", "").replace(",)", ")") == strip(b).replace(" ", "").replace(",)", ")"):
            return "display"
        for literal in re.findall(r"\"([^\"]*)\"", a):
            if " " not in literal.strip():
                continue
            for mutated in (f"XX{literal}XX", literal.upper(), literal.lower(), literal[:1].lower() + literal[1:]):
                if mutated != literal and a.replace(f'"{literal}"', f'"{mutated}"', 1) == b:
                    return "wording"
    return None


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from mutmut.__main__ import SourceFileMutationData, get_diff_for_mutant, walk_mutatable_files
    from mutmut.stats import status_by_exit_code

    reviewed = json.loads(EQUIVALENTS.read_text())["equivalents"] if EQUIVALENTS.exists() else []
    by_hand = {r["mutant"]: r["status"] for r in json.loads(BY_HAND.read_text())["mutants"]} if BY_HAND.exists() else {}
    by_key = {(e["function"], e["minus"], e["plus"]): e["class"] for e in reviewed}
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[dict]] = defaultdict(list)
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in data.exit_code_by_key.items():
            status = status_by_exit_code[code]
            if status in ("no tests", "survived") and name in by_hand:
                status = by_hand[name]
            module, function = re.match(r"(mechref[\w.]*?)\.x[_ǁ](.+?)__mutmut_\d+$", name).groups()
            function = function.replace("ǁ", ".").strip(".")
            if status != "survived":
                counts[module][status] += 1
                continue
            diff = get_diff_for_mutant(name, path=path)
            minus, plus = changed_lines(diff)
            key = (function, "\n".join(minus), "\n".join(plus))
            kind = classify(diff) or by_key.get(key, "survived")
            counts[module][kind] += 1
            survivors[module].append({"mutant": name, "class": kind, "minus": key[1], "plus": key[2]})
    modules = {}
    for module, c in sorted(counts.items()):
        checked = sum(n for s, n in c.items() if s != "not checked")
        killed = sum(n for s, n in c.items() if s in KILLED)
        set_aside = sum(c[k] for k in ASIDE)
        modules[module] = {
            "checked": checked,
            "killed": killed,
            "set_aside": {k: c[k] for k in ASIDE},
            "survived": c["survived"],
            "no_tests": c["no tests"],  # no test runs the mutated function: a gap, like a survivor
            "not_checked": c["not checked"],
            "raw": round(killed / checked, 3) if checked else None,
            "score": round(killed / (checked - set_aside), 3) if checked > set_aside else None,
        }
    totals = {k: sum(m[k] for m in modules.values()) for k in ("checked", "killed", "survived", "no_tests", "not_checked")}
    aside = sum(sum(m["set_aside"].values()) for m in modules.values())
    totals["raw"] = round(totals["killed"] / totals["checked"], 3)
    totals["score"] = round(totals["killed"] / (totals["checked"] - aside), 3)
    out = ROOT / "benchmarks" / "results" / "reliability" / "mutation_scores.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": "OMP_NUM_THREADS=1 mutmut run --max-children 2 && python benchmarks/mutation_scores.py",
                "tool": "mutmut 3.8.1",
                "total": totals,
                "modules": modules,
                "survivors": survivors,
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    for module, m in modules.items():
        aside = sum(m["set_aside"].values())
        print(
            f"{module:32s} killed {m['killed']:4d}/{m['checked'] - aside:<4d} = {m['score'] or 0:.1%} "
            f"(raw {m['raw'] or 0:.1%}; set aside {m['set_aside']}; survived {m['survived']}, unchecked {m['not_checked']})"
        )
    print(f"all: {totals}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
