"""The refusal_direction command's export stage (``--export-model``) alone, on the embedded model.

    python benchmarks/memory_export_stage.py --direction-run RUNS/rd --out /tmp/export [--same-as OLD_EXPORT]

The embedded model in bfloat16 with every weight resident (as after the command's evaluation),
then :func:`mechref.edits.orthogonalize.export_orthogonalized` of the run's direction, as the
command's last stage calls it; the peak resident memory of each part, as
``benchmarks/memory.py`` measures a command's stages. ``--same-as`` compares every tensor of the
new export with an earlier one (e.g. written by an earlier version) and its config.
Writes ``benchmarks/results/memory_export_stage.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from tier_timings import machine  # noqa: E402

from mechref import load_model  # noqa: E402
from mechref.directions.store import load_direction  # noqa: E402
from mechref.edits.orthogonalize import export_orthogonalized  # noqa: E402
from mechref.framework.memory import MemoryLog  # noqa: E402
from mechref.model.tensors import FolderTensors  # noqa: E402


def same_as(new: Path, old: Path) -> dict:
    a, b = FolderTensors(old), FolderTensors(new)
    names = sorted(a.where)
    differ = [n for n in names if n not in b.where or not torch.equal(a.get(n, torch.float32), b.get(n, torch.float32))]
    configs = [json.loads((f / "config.json").read_text()) for f in (old, new)]
    keys = (set(configs[0]) | set(configs[1])) - {"transformers_version", "_name_or_path"}
    return {
        "tensors": len(names),
        "tensors_differing": differ,
        "tensors_only_new": sorted(set(b.where) - set(a.where)),
        "config_differing": sorted(k for k in keys if configs[0].get(k) != configs[1].get(k)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--direction-run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the export")
    parser.add_argument("--same-as", type=Path, default=None, help="an earlier export of the same direction")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "memory_export_stage.json")
    args = parser.parse_args()
    log = MemoryLog()
    log.mark("load")
    model = load_model(dtype="bfloat16")
    stored = load_direction(args.direction_run)
    model.forward(torch.tensor([[1, 2, 3, 4]]))  # every weight read, as after the command's evaluation
    log.mark("export")
    started = time.perf_counter()
    export_orthogonalized(model, stored.direction, args.out, provenance={"layer": stored.layer, "position": stored.position})
    seconds = round(time.perf_counter() - started, 1)
    log.mark(None)
    result = {
        "command": "python benchmarks/memory_export_stage.py --direction-run RUNS/rd --out OUT --same-as RUNS/rd_model",
        "machine": machine(),
        **log.as_json(),
        "export_seconds": seconds,
        "same_as_earlier_export": same_as(args.out, args.same_as) if args.same_as else None,
    }
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
