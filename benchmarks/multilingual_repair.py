"""Where the embedded model's refusal breaks across languages, and whether adding the English
refusal vector there repairs it.

    python benchmarks/multilingual_repair.py --direction-run RUNS/rd --runs RUNS   # RUNS/rd: a refusal_direction run

Runs ``python -m mechref.analyses.multilingual --parts audit repair`` on the bundled set (eight
languages, 16 harmful and 16 harmless test prompts each, never used for the direction), the embedded
model in bfloat16, replies of up to 64 tokens; the two languages that refuse harmful prompts least
get the English vector added at the direction's layer at 0.5 and 1 times its size. Writes the
audit's rates and the repair block of the run's summary to ``benchmarks/results/multilingual_repair.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from tier_timings import commit, machine  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "multilingual_repair.json"
ARGUMENTS = ["--parts", "audit", "repair", "--repair-languages", "2", "--repair-coefficients", "0.5", "1"]
ARGUMENTS += ["--judge", "substring", "--max-new-tokens", "64", "--static"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction-run", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True, help="a folder for the analysis's output")
    args = parser.parse_args()
    out = args.runs / "multilingual_repair"
    command = [sys.executable, "-m", "mechref.analyses.multilingual", *ARGUMENTS, "--direction-run", str(args.direction_run)]
    start = time.perf_counter()
    subprocess.run([*command, "--out", str(out)], check=True, cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    result = {
        "command": "python -m mechref.analyses.multilingual " + " ".join(ARGUMENTS) + " --direction-run RUNS/rd",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "commit": commit(),
        "machine": machine(),
        "wall_s": round(time.perf_counter() - start, 1),
        "model": summary["model"],
        "dtype": summary["dtype"],
        "direction_layer": summary["direction_layer"],
        "judge": summary["judge"],
        "baseline_refusal": summary["baseline_refusal"],
        "judge_not_validated": summary["judge_not_validated"],
        "repair": summary["repair"],
    }
    OUT.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
