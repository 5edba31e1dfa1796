"""Time every workshop notebook at its own default sizes, cell by cell, in a fresh kernel.

    python benchmarks/notebook_timings.py --direction-run figures/refusal_direction
    python benchmarks/notebook_timings.py --only 01_quickstart 03_suffix_hijack

Writes ``benchmarks/results/notebook_timings.json``: the machine (CPU count, torch threads), each
notebook's parameters as shipped, its total wall time, and its slowest cells, so that the
teacher's guide (``notebooks/README.md``) can say how long a class waits. Notebooks 03 and 04 read
a pre-computed refusal direction (``--direction-run``), as the guide tells a teacher to prepare.
Each notebook runs in a temporary folder; nothing is written into the repository but the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RESULT = ROOT / "benchmarks" / "results" / "notebook_timings.json"
NAMES = ("01_quickstart", "02_refusal_direction", "03_suffix_hijack", "04_multilingual")


def parameters_of(notebook) -> str:
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    return cell.source


def time_notebook(name: str, direction_run: Path | None) -> dict:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    shipped = parameters_of(notebook)
    if direction_run is not None and "DIRECTION_RUN" in shipped:
        (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        cell.source += f"\nDIRECTION_RUN = {str(direction_run.resolve())!r}  # the pre-computed direction\n"
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        client = NotebookClient(notebook, timeout=3600, kernel_name="python3", resources={"metadata": {"path": folder}})
        client.record_timing = True
        client.execute()
        total = time.perf_counter() - started
    cells = []
    for index, cell in enumerate(notebook.cells):
        timing = cell.metadata.get("execution", {})
        if cell.cell_type != "code" or "iopub.execute_input" not in timing:
            continue
        start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
        first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
        cells.append({"cell": index, "seconds": round((end - start).total_seconds(), 1), "first_line": first_line[:100]})
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    if errors:
        raise SystemExit(f"{name} failed: {errors[0].get('ename')}: {errors[0].get('evalue')}")
    return {
        "parameters_as_shipped": shipped,
        "direction_run": str(direction_run) if direction_run is not None and "DIRECTION_RUN" in shipped else None,
        "total_s": round(total, 1),
        "slowest_cells": sorted(cells, key=lambda c: -c["seconds"])[:5],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    parser.add_argument("--direction-run", type=Path, default=None, help="a refusal_direction run folder for 03 and 04")
    args = parser.parse_args(argv)
    if args.direction_run is not None and not (args.direction_run / "direction.safetensors").is_file():
        raise SystemExit(f"notebook_timings: error: no direction.safetensors in {args.direction_run}")
    previous = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    notebooks = previous.get("notebooks", {})
    for name in args.only:
        print(f"running {name} at its default sizes …", flush=True)
        notebooks[name] = time_notebook(name, args.direction_run)
        notebooks[name]["command"] = "python benchmarks/notebook_timings.py " + " ".join(sys.argv[1:] if argv is None else argv)
        print(f"  {notebooks[name]['total_s']} s", flush=True)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "notebooks": dict(sorted(notebooks.items())),
    }
    tmp = RESULT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    shutil.move(tmp, RESULT)
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
