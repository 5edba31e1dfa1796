"""Benchmark: the selection modes (fast, exhaustive, cosmic) on the same data.

Reuses the refusal tokens, filtered prompts and candidates of a finished
``python -m mechref.analyses.refusal_direction`` run (its ``--out`` folder), then runs the
selection in both modes on the same model and dtype, and records forward passes, time, the
chosen candidates and their bypass scores.

    python benchmarks/bench_selection.py --run runs/rd_paper --out benchmarks/results/selection.json
    python benchmarks/bench_selection.py --run runs/sel_fast --modes fast cosmic --out benchmarks/results/selection_modes.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="output folder of a refusal_direction run")
    parser.add_argument("--modes", nargs="+", default=["fast", "exhaustive"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/selection.json"))
    args = parser.parse_args()

    from mechref import load_model
    from mechref.analyses.refusal_direction.selection import SelectionSettings, select_direction
    from mechref.directions.candidates import CandidateDirections
    from mechref.framework.io import read_json

    summary = read_json(args.run / "summary.json")
    model = load_model(
        None if summary["source"].startswith("embedded:") else summary["source"].split(":", 1)[1], dtype=summary["dtype"]
    )
    tokens = read_json(args.run / "refusal_tokens.json")["token_ids"]
    prompts = read_json(args.run / "filtered_prompts.json")
    candidates = CandidateDirections.load(args.run / "candidates")
    results = {
        "model": model.name,
        "dtype": summary["dtype"],
        "n_harmful_val": len(prompts["harmful_val"]),
        "n_harmless_val": len(prompts["harmless_val"]),
        "n_candidates": int(candidates.directions.shape[0] * candidates.directions.shape[1]),
    }
    for mode in args.modes:
        start = time.perf_counter()
        sel = select_direction(
            model, candidates, prompts["harmful_val"], prompts["harmless_val"], tokens, SelectionSettings(mode=mode)
        )
        seconds = time.perf_counter() - start
        results[mode] = {
            "seconds": round(seconds, 1),
            "n_forward_passes": sel.n_forward_passes,
            "n_prompt_passes": sel.n_prompt_passes,
            "layer": sel.layer,
            "position": sel.position,
            "bypass": sel.chosen.bypass,
            "induce": sel.chosen.induce,
            "kl": sel.chosen.kl,
            "n_scored": sum(s.evaluated for s in sel.scores),
            "cosmic": sel.chosen.cosmic,
            "n_cosmic_scored": sum(s.cosmic is not None for s in sel.scores),
            "reference_layers": sel.reference_layers,
        }
        print(mode, results[mode], flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if "fast" in results and "exhaustive" in results:
        results["speedup"] = round(results["exhaustive"]["seconds"] / results["fast"]["seconds"], 2)
        results["pass_ratio"] = round(results["exhaustive"]["n_prompt_passes"] / results["fast"]["n_prompt_passes"], 2)
        results["same_choice"] = (results["fast"]["layer"], results["fast"]["position"]) == (
            results["exhaustive"]["layer"],
            results["exhaustive"]["position"],
        )
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
