"""Peak resident memory of every command, stage by stage, on the embedded model in bfloat16.

    python benchmarks/memory.py --runs /tmp/memory-runs                     # every command, in order
    python benchmarks/memory.py --runs /tmp/memory-runs --only damage gcg   # some (they read earlier runs' outputs)
    python benchmarks/memory.py --runs /tmp/after --compare /tmp/before     # and compare each summary.json

Each command runs in its own process with ``MECHREF_MEMORY_LOG`` set, so it writes the peak
resident memory of each of its stages as the kernel measured it (``VmHWM``, reset at every stage:
:mod:`mechref.framework.memory`). The sizes are the commands' defaults or the paper settings, with
fewer test prompts, trials or steps where a command's time grows with them but its memory does not
(every batch still runs at its default size). The commands run in order in one folder: the refusal
direction (with its exported model) is computed by the second and read by the others.

Writes ``benchmarks/results/memory.json`` under ``--label`` (``after`` by default), keeping the
other labels: the machine, and for each command its arguments, exit status, wall seconds, peak
and per-stage peaks in GiB, and (with ``--compare``) whether its ``summary.json`` numbers equal
those of the same command in the other folder (``benchmarks/compare_summaries.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from tier_timings import machine  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "memory.json"
SPLITS = "../shared/data/refusal_direction/splits"

# (name, module, arguments, the folder holding its summary.json); {R} is the runs folder.
COMMANDS = (
    ("quickstart", "quickstart", "--dtype bfloat16 --out {R}/quickstart", "quickstart"),
    (
        "refusal_direction",
        "refusal_direction",
        "--config analyses/refusal_direction/paper_settings.toml --n-test 40 --out {R}/rd --export-model {R}/rd_model",
        "rd",
    ),
    ("export", "export", "--direction-run {R}/rd --out {R}/export --max-new-tokens 64", "export"),
    (
        "damage",
        "damage",
        "--config analyses/damage/paper_model.toml --direction {R}/rd --edited {R}/rd_model --out {R}/damage",
        "damage",
    ),
    (
        "optimize_edit",
        "optimize_edit",
        f"--direction-run {{R}}/rd --splits {SPLITS} --n-trials 4 --timeout-minutes 2 --out {{R}}/optimize_edit "
        "--export-model {R}/optimize_edit_model",
        "optimize_edit",
    ),
    ("multilingual", "multilingual", "--direction-run {R}/rd --languages en de --out {R}/multilingual", "multilingual"),
    ("categories", "categories", "--direction-run {R}/rd --max-per-category 8 --out {R}/categories", "categories"),
    ("suffix_hijack", "suffix_hijack", "--direction-run {R}/rd --out {R}/suffix_hijack", "suffix_hijack"),
    ("gcg", "gcg", "--config analyses/gcg/shipped_suffix.toml --steps 3 --out {R}/gcg/suffix.json", None),
)


def run_command(name: str, module: str, arguments: str, runs: Path) -> dict:
    log = runs / "memory" / f"{name}.json"
    log.unlink(missing_ok=True)
    argv = [sys.executable, "-m", f"mechref.analyses.{module}", *arguments.format(R=runs).split()]
    env = {**os.environ, "MECHREF_MEMORY_LOG": str(log)}
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = round(time.perf_counter() - started, 1)
    (runs / "memory" / f"{name}.out").write_text(done.stdout + done.stderr, encoding="utf-8")
    measured = json.loads(log.read_text()) if log.is_file() else {}
    # The whole process's peak, as the kernel counts it for a finished child (a check on the log's
    # maximum; the log resets the high-water mark between stages, so the child's own figure is the last stage's).
    return {
        "command": f"python -m mechref.analyses.{module} {arguments.format(R='RUNS')}",
        "exit": done.returncode,
        "wall_s": seconds,
        "peak_gib": measured.get("peak_gib"),
        "exact": measured.get("exact"),
        "stages_gib": measured.get("stages_gib", {}),
        "error": None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1],
        "commit": _git("rev-parse", "--short", "HEAD"),
    }


def compare(folder: str | None, before: Path, after: Path) -> dict | None:
    if folder is None:
        return None
    a, b = before / folder / "summary.json", after / folder / "summary.json"
    if not (a.is_file() and b.is_file()):
        return {"same": None, "note": f"no summary.json in both folders ({folder})"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "compare_summaries.py"),
            str(a),
            str(b),
            "--paths-from",
            str(before),
            str(after),
        ],
        capture_output=True,
        text=True,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    return {"same": done.returncode == 0, "note": lines[-1] if lines else ""}


def _git(*arguments: str) -> str:
    return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="folder for the commands' outputs (a fresh one)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these commands")
    parser.add_argument("--label", default="after", help="where in memory.json the results go")
    parser.add_argument("--compare", type=Path, default=None, help="an earlier --runs folder: compare each summary.json")
    parser.add_argument("--json", type=Path, default=RESULT)
    args = parser.parse_args()
    unknown = sorted(set(args.only or ()) - {name for name, *_ in COMMANDS})
    if unknown:
        parser.error(f"unknown command {unknown[0]!r}; choose among {', '.join(name for name, *_ in COMMANDS)}")
    runs = args.runs.resolve()
    (runs / "memory").mkdir(parents=True, exist_ok=True)
    data = json.loads(args.json.read_text()) if args.json.is_file() else {}
    block = data.get(args.label, {}) if args.only else {}
    block.update(
        {
            "machine": machine(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "commit": _git("rev-parse", "--short", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "mechref")),
        }
    )
    commands = block.setdefault("commands", {})
    for name, module, arguments, folder in COMMANDS:
        if args.only and name not in args.only:
            continue
        print(f"{name} …", flush=True)
        result = run_command(name, module, arguments, runs)
        if args.compare is not None:
            result["same_summary"] = compare(folder, args.compare.resolve(), runs)
        commands[name] = result
        stages = ", ".join(f"{k} {v:.2f}" for k, v in result["stages_gib"].items())
        print(f"  exit {result['exit']}, {result['wall_s']} s, peak {result['peak_gib']} GiB ({stages})", flush=True)
        if result["error"]:
            print(f"  {result['error']}", flush=True)
        data[args.label] = block
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
