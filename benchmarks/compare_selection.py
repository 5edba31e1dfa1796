"""Benchmark: the paper's selection (bypass / induce / KL, fast mode) against selection without
generation (``--selection cosmic``) on the same data, from two finished refusal-direction runs.

Run the analysis twice on the same prompts, the second with ``--selection cosmic`` (copying the
first run's folder first lets the second reuse its refusal tokens, filter and candidates), then::

    python benchmarks/bench_selection.py --run runs/sel_fast --modes fast cosmic --out runs/selection_modes.json
    python benchmarks/compare_selection.py --fast runs/sel_fast --cosmic runs/sel_cosmic \\
        --timing runs/selection_modes.json --out benchmarks/results/selection_cosmic.json

Records, per mode: the chosen candidate, its bypass / induce / KL scores, its refusal rates on the
test prompts with k/n and 95% intervals, the forward passes and seconds of the selection stage
(and, with ``--timing``, both selections timed again in one process on the same candidates).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _selection_only(folder: Path) -> dict:
    """A run stopped after its selection stage (no summary): the chosen candidate and its scores."""
    selection = json.loads((folder / "selection.json").read_text())
    chosen = next(s for s in selection["scores"] if (s["position"], s["layer"]) == (selection["position"], selection["layer"]))
    return {
        "run": str(folder),
        "selection_mode": selection["settings"]["mode"],
        "layer": selection["layer"],
        "position": selection["position"],
        "bypass_score": selection["bypass_score"],
        "induce_score": selection["induce_score"],
        "kl": selection["kl"],
        "cosmic": {"score": chosen.get("cosmic"), "reference_layers": selection.get("reference_layers")},
        "refusal_rate_counts": None,
        "n_forward_passes_selection": selection["n_forward_passes"],
        "n_prompt_passes_selection": selection["n_prompt_passes"],
        "selection_seconds": None,
        "selection_seconds_note": "not timed (no summary)",
        "note": "stopped after selection: no evaluation on the test prompts",
    }


def _mode(folder: Path) -> dict:
    if not (folder / "summary.json").is_file():
        return _selection_only(folder)
    summary = json.loads((folder / "summary.json").read_text())
    return {
        "run": str(folder),
        "selection_mode": summary["selection_mode"],
        "layer": summary["layer"],
        "position": summary["position"],
        "bypass_score": summary["bypass_score"],
        "induce_score": summary["induce_score"],
        "kl": summary["kl"],
        "cosmic": summary.get("cosmic"),
        "refusal_rate_counts": summary["refusal_rate_counts"],
        "paired_tests": summary["paired_tests"],
        "n_forward_passes_selection": summary["n_forward_passes_selection"],
        "n_prompt_passes_selection": summary["n_prompt_passes_selection"],
        "selection_seconds": summary["timings_s"]["selection"],
        "data": {k: v["n"] for k, v in summary["data"].items()},
        "resumed_stages": summary["resumed_stages"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", type=Path, required=True, help="refusal_direction run with --selection fast")
    parser.add_argument("--cosmic", type=Path, required=True, help="refusal_direction run with --selection cosmic")
    parser.add_argument(
        "--timing",
        type=Path,
        help="bench_selection.py --modes fast cosmic output on the fast run's folder: both selections timed in one process",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/selection_cosmic.json"))
    args = parser.parse_args()
    fast, cosmic = _mode(args.fast), _mode(args.cosmic)
    if "data" in cosmic and fast["data"] != cosmic["data"]:
        raise SystemExit(f"the two runs used different prompt sets: {fast['data']} vs {cosmic['data']}")
    results = {
        "command": "python benchmarks/compare_selection.py --fast RUN --cosmic RUN",
        "fast": fast,
        "cosmic": cosmic,
        "same_choice": (fast["layer"], fast["position"]) == (cosmic["layer"], cosmic["position"]),
        "prompt_pass_ratio_cosmic_over_fast": round(cosmic["n_prompt_passes_selection"] / fast["n_prompt_passes_selection"], 2),
        "time_ratio_cosmic_over_fast": (
            round(cosmic["selection_seconds"] / fast["selection_seconds"], 2) if cosmic["selection_seconds"] else None
        ),
    }
    if args.timing is not None:
        timing = json.loads(args.timing.read_text())
        results["selection_in_one_process"] = {mode: timing[mode] for mode in ("fast", "cosmic")}
        results["time_ratio_in_one_process_cosmic_over_fast"] = round(timing["cosmic"]["seconds"] / timing["fast"]["seconds"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
