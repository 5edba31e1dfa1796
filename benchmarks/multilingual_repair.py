"""Where the embedded model's refusal breaks across languages, and whether adding the English
refusal vector there repairs it.

    python benchmarks/multilingual_repair.py --direction-run RUNS/rd --runs RUNS   # RUNS/rd: a refusal_direction run
    python benchmarks/multilingual_repair.py --direction-run RUNS/rd --runs RUNS --polyrefuse ../shared/data/polyrefuse

Runs ``python -m mechref.analyses.multilingual --parts audit repair`` on the bundled set (eight
languages, 16 harmful and 16 harmless test prompts each, never used for the direction), the embedded
model in bfloat16, replies of up to 64 tokens; the two languages that refuse harmful prompts least
get the English vector added at the direction's layer at 0.5 and 1 times its size. Writes the
audit's rates and the repair block of the run's summary to ``benchmarks/results/multilingual_repair.json``.

With ``--polyrefuse``: the same on PolyRefuse's test prompts (another translation, other prompts) in
the eight languages whose phrase list passed a hand-labelled check on this model's replies
(``mechref.judges.validation``), so the weakest languages' rates are measurements; written to
``benchmarks/results/multilingual_repair_polyrefuse.json``.
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
OUT_POLYREFUSE = ROOT / "benchmarks" / "results" / "multilingual_repair_polyrefuse.json"
#: PolyRefuse's languages whose phrase list is validated on the embedded model's replies.
POLYREFUSE_VALIDATED = ["en", "de", "es", "fr", "ja", "ru", "th", "zh"]
ARGUMENTS = ["--parts", "audit", "repair", "--repair-languages", "2", "--repair-coefficients", "0.5", "1"]
ARGUMENTS += ["--judge", "substring", "--max-new-tokens", "64", "--static"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction-run", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True, help="a folder for the analysis's output")
    parser.add_argument("--polyrefuse", type=Path, help="a PolyRefuse folder: its validated languages instead of the bundled set")
    args = parser.parse_args()
    arguments = list(ARGUMENTS)
    if args.polyrefuse is not None:
        arguments += ["--data", str(args.polyrefuse), "--languages", *POLYREFUSE_VALIDATED]
    out = args.runs / ("multilingual_repair_polyrefuse" if args.polyrefuse else "multilingual_repair")
    command = [sys.executable, "-m", "mechref.analyses.multilingual", *arguments, "--direction-run", str(args.direction_run)]

    def shown(text: str) -> str:  # the data folder as the README names it, not as this machine does
        return text.replace(str(args.polyrefuse), "../shared/data/polyrefuse") if args.polyrefuse else text

    start = time.perf_counter()
    subprocess.run([*command, "--out", str(out)], check=True, cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    result = {
        "command": shown("python -m mechref.analyses.multilingual " + " ".join(arguments) + " --direction-run RUNS/rd"),
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
        "data": shown(summary["data"]["source"]),
        "repair": summary["repair"],
    }
    path = OUT_POLYREFUSE if args.polyrefuse else OUT
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
