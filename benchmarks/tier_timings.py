"""Time each tier of the test suite and the documentation build, as CI runs them, on this machine.

    python benchmarks/tier_timings.py                      # every step, in CI's order
    python benchmarks/tier_timings.py --only fast docs     # some steps (the others keep their last timing)

Writes ``benchmarks/results/reliability/tiers.json``: the machine (CPU model, cores, whether it
computes bfloat16 natively, memory), and for each step its command, wall seconds, exit status and
pytest's summary line. mypy and mechref run with empty caches of their own, as in a fresh
clone on a new machine (so the integration tier builds the embedded model's cache). Run it with
nothing else busy on the machine: the steps use both cores. The integration step writes the
executed notebooks to ``docs/_executed/`` as ``.ci/run`` does, so the docs step renders them.

The timings depend on the CPU far more than on anything else: bfloat16 matmuls run in hardware on
CPUs with AMX or AVX-512 BF16 and are emulated elsewhere, and the integration tier runs the
embedded model in bfloat16.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "reliability" / "tiers.json"

# (name, what it is, command): the fast tier is what a contributor runs before each commit; the
# others are the steps of .ci/run after the installation.
STEPS = (
    (
        "lint",
        "lint and types (ruff, ruff format, mypy with an empty cache)",
        "ruff check . && ruff format --check . && mypy --cache-dir {mypy_cache}",
    ),
    (
        "fast",
        "fast tier: unit, contracts, doctests",
        'python -m pytest -m "not integration and not browser" -n 2 -p no:cacheprovider',
    ),
    (
        "ci-unit",
        "CI's first pytest: the fast tier and the browser tier",
        'python -m pytest -m "not integration" -n 2 -p no:cacheprovider',
    ),
    (
        "integration",
        "integration tier: the embedded model, the analyses, the notebooks",
        "python -m pytest -m integration -p no:cacheprovider",
    ),
    (
        "docs",
        "documentation site: build with warnings as errors, every page opened in Chromium",
        "sphinx-build -W --keep-going -n -q -b html docs docs/_build/html && python docs/check_site.py",
    ),
)
NAMES = tuple(name for name, _, _ in STEPS)


def commit() -> str:
    """The short hash of the checked-out commit (what a result was measured at)."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def machine() -> dict:
    """The CPU model, its cores, whether it has bfloat16 in hardware, and the memory."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flag_line = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flags = set(flag_line.group(1).split()) if flag_line else set()
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").is_file() else ""
    memory = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    return {
        "processor": model.group(1).strip() if model else platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "bfloat16_in_hardware": sorted(flags & {"amx_bf16", "avx512_bf16"}),
        "memory_gib": round(int(memory.group(1)) / 2**20, 1) if memory else None,
        "python": platform.python_version(),
    }


def run_step(command: str, cache: str) -> dict:
    env = {**os.environ, "MECHREF_EXECUTED_NOTEBOOKS": str(ROOT / "docs" / "_executed"), "MECHREF_CACHE": cache}
    with tempfile.TemporaryDirectory(prefix="mechref-mypy-") as mypy_cache:
        started = time.perf_counter()
        done = subprocess.run(
            command.format(mypy_cache=mypy_cache), shell=True, cwd=ROOT, env=env, capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    # pytest's last line: "848 passed, 16 warnings in 81.94s (0:01:21)", "1 failed, 847 passed in …".
    summary = re.findall(r"^=*\s*((?:\d+ \w+, )*\d+ \w+ in [\d.]+s\b.*?)\s*=*$", output, re.M)
    pages = re.findall(r"^(\d+ pages opened in Chromium.*)$", output, re.M)
    return {
        "seconds": round(seconds, 1),
        "returncode": done.returncode,
        "summary": (summary or pages or [None])[-1],
        "tail": output.strip().splitlines()[-3:] if done.returncode else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES), help="the steps to run")
    args = parser.parse_args(argv)
    if shutil.which("chromium") is None and {"ci-unit", "docs"} & set(args.only):
        raise SystemExit("tier_timings: error: the browser tier and the site check need Chromium: apt-get install chromium")
    previous = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    here = machine()
    if previous and previous.get("machine") != here:
        previous = {}  # timings from another machine do not go beside these
    steps = previous.get("steps", {})
    # mechref's cache starts empty, as on a new machine: the integration tier's time includes
    # building the embedded model's cache from its GGUF (the steps share it, as in one CI run).
    with tempfile.TemporaryDirectory(prefix="mechref-cache-") as cache:
        for name, what, command in STEPS:
            if name not in args.only:
                continue
            print(f"{name}: {what} …", flush=True)
            timed = run_step(command, cache)
            steps[name] = {"what": what, "command": command.replace(" --cache-dir {mypy_cache}", ""), **timed}
            print(f"  {timed['seconds']} s, exit {timed['returncode']}: {timed['summary']}", flush=True)
    result = {
        "command": "python benchmarks/tier_timings.py",
        "machine": here,
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "steps": {name: steps[name] for name in NAMES if name in steps},
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(RESULT)
    print(f"wrote {RESULT.relative_to(ROOT)}")
    return 1 if any(step["returncode"] for step in result["steps"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
