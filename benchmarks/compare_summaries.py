"""Compare the numbers of two ``summary.json`` files of the same analysis (e.g. before and after a
refactor): every number, string and list present in both, except timings, settings echoes and paths.

    python benchmarks/compare_summaries.py BEFORE/summary.json AFTER/summary.json [--tolerance 0] [--json OUT]
        [--paths-from BEFORE_RUNS AFTER_RUNS]

Exits 1 when a compared value differs (beyond ``--tolerance`` for numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# Left out: timings, settings echoes, paths, and direction_mismatches (it names the code version that
# wrote the direction file, which differs between two checkouts by construction).
SKIP = {
    "timings_s", "timings", "resumed_stages", "settings", "figures", "mechref_version", "exported_model", "generations",
    "direction_mismatches",
}  # fmt: skip


def flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            if key not in SKIP:
                out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def same(a: object, b: object, tolerance: float) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=0, abs_tol=tolerance) or a == b
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return all(same(x, y, tolerance) for x, y in zip(a, b))
    return a == b


def compare(before: dict, after: dict, tolerance: float = 0.0) -> dict:
    a, b = flatten(before), flatten(after)
    common = sorted(set(a) & set(b))
    differing = {k: {"before": a[k], "after": b[k]} for k in common if not same(a[k], b[k], tolerance)}
    return {
        "compared": len(common),
        "differing": differing,
        "only_before": sorted(set(a) - set(b)),
        "only_after": sorted(set(b) - set(a)),
        "tolerance": tolerance,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.0)
    parser.add_argument("--json", type=Path, default=None, help="write the comparison here")
    parser.add_argument(
        "--paths-from", nargs=2, metavar=("BEFORE_DIR", "AFTER_DIR"), default=None,
        help="two run folders: a string naming a file under the first equals the same string under the second",
    )  # fmt: skip
    args = parser.parse_args(argv)
    before_text, after_text = args.before.read_text(), args.after.read_text()
    if args.paths_from:
        # The same run made in another folder: its files' paths differ by that folder alone.
        before_text = before_text.replace(str(Path(args.paths_from[0])), "RUNS")
        after_text = after_text.replace(str(Path(args.paths_from[1])), "RUNS")
    result = compare(json.loads(before_text), json.loads(after_text), args.tolerance)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(
        f"{result['compared']} values compared, {len(result['differing'])} differ; "
        f"{len(result['only_before'])} only before, {len(result['only_after'])} only after"
    )
    for key, pair in result["differing"].items():
        print(f"  {key}: {pair['before']!r} -> {pair['after']!r}")
    return 1 if result["differing"] else 0


if __name__ == "__main__":
    sys.exit(main())
