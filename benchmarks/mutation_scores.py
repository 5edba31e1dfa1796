"""Mutation score per core module, from the results of a finished ``mutmut run``.

    pip install mutmut==3.8.1
    OMP_NUM_THREADS=1 MECHREF_SKIP_INTEGRATION=1 mutmut run --max-children 2   # about 30 minutes on 2 cores
    python benchmarks/mutation_scores.py     # writes benchmarks/results/reliability/mutation_scores.json

The modules and the tests are configured in ``[tool.mutmut]`` of pyproject.toml. A mutant is
*killed* when a test fails (or the run times out) with it in place; the score is killed / checked
mutants, before any mutant is set aside as equivalent.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLED = {"killed", "timeout"}


def main() -> int:
    listing = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in listing.splitlines():
        match = re.match(r"\s*(mechref\.[\w.]+)\.x_(\w+?)__mutmut_(\d+): (.+)$", line.strip())
        if not match:
            continue
        module, function, number, status = match.groups()
        counts[module][status] += 1
        if status == "survived":
            survivors[module].append(f"{function}#{number}")
    modules = {}
    for module, c in sorted(counts.items()):
        total = sum(n for s, n in c.items() if s != "not checked")  # a run cut short leaves some unchecked
        killed = sum(n for s, n in c.items() if s in KILLED)
        modules[module] = {
            "mutants": total,
            "killed": killed,
            "score": round(killed / total, 3) if total else None,
            "statuses": dict(c),
        }
    total = sum(m["mutants"] for m in modules.values())
    killed = sum(m["killed"] for m in modules.values())
    out = ROOT / "benchmarks" / "results" / "reliability" / "mutation_scores.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": "OMP_NUM_THREADS=1 MECHREF_SKIP_INTEGRATION=1 mutmut run --max-children 2 && "
                "python benchmarks/mutation_scores.py",
                "tool": "mutmut 3.8.1",
                "total": {"mutants": total, "killed": killed, "score": round(killed / total, 3) if total else None},
                "modules": modules,
                "survivors": survivors,
            },
            indent=2,
        )
        + "\n"
    )
    for module, m in modules.items():
        print(f"{module:34s} {m['killed']:5d}/{m['mutants']:<5d} {m['score'] or 0:.1%}")
    print(f"{'all':34s} {killed:5d}/{total:<5d} {killed / total:.1%}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
