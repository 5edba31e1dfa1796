"""Benchmark: mechref's compacting greedy decoder against ``transformers``' ``generate`` (greedy),
the same prompts, batches and hooks, in one process.

Replies to harmful prompts mostly end early (a short refusal), replies to harmless ones run to the
token limit; the decoder drops each finished reply from the batch. The run checks both give the
same tokens, then records seconds and tokens per second of each, and their ratio.

    python benchmarks/bench_generation.py --out benchmarks/results/generation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generation.json"))
    args = parser.parse_args()

    import mechref
    from mechref import generation
    from mechref.data import bundled
    from mechref.directions.store import load_direction
    from mechref.interventions import directional_ablation

    model = mechref.load_model(dtype=args.dtype)
    workloads = {
        "harmful test prompts (mostly short refusals)": (bundled("harmful", "test").instructions, None),
        "harmless test prompts (mostly full-length answers)": (bundled("harmless", "test").instructions, None),
    }
    results: dict = {
        "command": "python benchmarks/bench_generation.py",
        "model": model.name,
        "dtype": args.dtype,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "workloads": {},
    }
    direction_file = Path("runs/refusal_direction/direction.safetensors")
    if direction_file.is_file():
        workloads["harmful test prompts, refusal direction ablated"] = (
            bundled("harmful", "test").instructions,
            load_direction(direction_file).direction,
        )
    for name, (prompts, direction) in workloads.items():
        timings, outputs = {}, {}
        for decoder in ("transformers_generate", "mechref_compacting"):
            original = generation.plain_greedy
            if decoder == "transformers_generate":
                generation.plain_greedy = lambda model: False  # type: ignore[assignment]  # force the fallback path
            try:
                start = time.perf_counter()
                if direction is None:
                    ids = generation.generate_ids(model, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
                else:
                    with directional_ablation(model, direction):
                        ids = generation.generate_ids(
                            model, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
                        )
                timings[decoder] = time.perf_counter() - start
            finally:
                generation.plain_greedy = original  # type: ignore[assignment]
            outputs[decoder] = ids
        tokens = sum(len(r) for r in outputs["mechref_compacting"])
        same = outputs["transformers_generate"] == outputs["mechref_compacting"]
        differing = sum(a != b for a, b in zip(outputs["transformers_generate"], outputs["mechref_compacting"]))
        results["workloads"][name] = {
            "n_prompts": len(prompts),
            "reply_tokens": tokens,
            "mean_reply_tokens": round(tokens / len(prompts), 1),
            "seconds": {k: round(v, 1) for k, v in timings.items()},
            "tokens_per_second": {k: round(tokens / v, 1) for k, v in timings.items()},
            "speedup": round(timings["transformers_generate"] / timings["mechref_compacting"], 2),
            "identical_tokens": same,
            "replies_differing": differing,
        }
        print(name, json.dumps(results["workloads"][name]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
