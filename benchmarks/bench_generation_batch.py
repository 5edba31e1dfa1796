"""Benchmark: how many prompts the evaluation should decode together on this machine.

The same prompts, greedy, up to ``--max-new-tokens`` tokens, with mechref's decoder (finished
replies leave the batch) at each batch size in ``--batch-sizes``, in one process; and, for the
same sizes, ``transformers``' own greedy ``generate``. Writes seconds, reply tokens and tokens per
second of each, and each size's speed relative to the first.

    python benchmarks/bench_generation_batch.py --prompts ../shared/data/refusal_direction/splits/harmless_test.json \\
        --out benchmarks/results/generation_batch.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=Path, required=True, help="a JSON prompt file (the refusal_direction layout)")
    parser.add_argument("--n", type=int, default=100, help="the first N prompts")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 32])
    parser.add_argument("--transformers", action="store_true", help="also time transformers' generate at each size")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generation_batch.json"))
    args = parser.parse_args()

    import torch

    import mechref
    from mechref import generation
    from mechref.data import load_prompt_file

    prompts = load_prompt_file(args.prompts, "harmless", "test").take(args.n).instructions
    model = mechref.load_model(dtype=args.dtype)
    results: dict = {
        "command": "python benchmarks/bench_generation_batch.py --prompts "
        + f"{args.prompts} --n {args.n} --batch-sizes {' '.join(map(str, args.batch_sizes))}"
        + (" --transformers" if args.transformers else ""),
        "model": model.name,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "n_prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "runs": [],
    }
    decoders = ["mechref_compacting", *(["transformers_generate"] if args.transformers else [])]
    for decoder in decoders:
        for size in args.batch_sizes:
            original = generation.plain_greedy
            if decoder == "transformers_generate":
                generation.plain_greedy = lambda model: False  # type: ignore[assignment]  # force the fallback path
            try:
                start = time.perf_counter()
                ids = generation.generate_ids(model, prompts, max_new_tokens=args.max_new_tokens, batch_size=size)
                seconds = time.perf_counter() - start
            finally:
                generation.plain_greedy = original  # type: ignore[assignment]
            tokens = sum(len(r) for r in ids)
            row = {
                "decoder": decoder,
                "batch_size": size,
                "seconds": round(seconds, 1),
                "reply_tokens": tokens,
                "tokens_per_second": round(tokens / seconds, 1),
            }
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
    first = {r["decoder"]: r["tokens_per_second"] for r in results["runs"] if r["batch_size"] == args.batch_sizes[0]}
    for row in results["runs"]:
        row["speed_vs_first_size"] = round(row["tokens_per_second"] / first[row["decoder"]], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
