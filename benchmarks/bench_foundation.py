"""Benchmark: residual capture through mechref vs a plain Hugging Face forward, and load cost.

Measured in one run on the embedded model (so ratios compare like with like):

* tokens/s of a plain HF forward with ``output_hidden_states=True`` (every layer, every
  position, full logits), against mechref's ``capture_residual`` (a) at every layer, last five
  positions, logits skipped, and (b) at one middle layer, stopping the forward pass there, and
  against mechref's last-token logits (the refusal score's pass) with and without reuse of the
  shared chat-template prefix; in float32 and bfloat16, each after a warm-up run;
* wall time and peak resident memory of the first load (assemble + verify + dequantize + cache,
  into a fresh temporary MECHREF_CACHE) and of a cached load, each in its own process, in float32
  and in bfloat16 (each dtype into its own fresh cache: the first load writes the dtype asked for).

    python benchmarks/bench_foundation.py --n 64 --batch-size 16 --out benchmarks/results/foundation.json
    python benchmarks/bench_foundation.py --loads-only --out benchmarks/results/first_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOAD_SNIPPET = """
import resource, time, json, sys
t = time.perf_counter()
from mechref import load_model
m = load_model(dtype=sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t, "dtype": str(m.dtype),
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def measure_load(cache: str | None, dtype: str = "float32") -> dict:
    env = dict(os.environ)
    if cache:
        env["MECHREF_CACHE"] = cache
    out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, dtype], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_loads() -> dict:
    """First and cached load in float32 and in bfloat16, each dtype in its own fresh cache."""
    results = {}
    for dtype, suffix in (("float32", ""), ("bfloat16", "_bfloat16")):
        with tempfile.TemporaryDirectory() as cache:
            results[f"first_load{suffix}"] = measure_load(cache, dtype)
            results[f"cached_load{suffix}"] = measure_load(cache, dtype)
            print(dtype, results[f"first_load{suffix}"], results[f"cached_load{suffix}"], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-first-load", action="store_true", help="skip the (slow) first-load measurements")
    parser.add_argument("--loads-only", action="store_true", help="measure the loads alone (no forward-pass timings)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/foundation.json"))
    args = parser.parse_args()

    import torch

    from mechref import load_model
    from mechref.capture import capture_residual
    from mechref.data import bundled
    from mechref.model.batching import iter_batches

    results: dict = {"n_prompts": args.n, "batch_size": args.batch_size, "torch_threads": torch.get_num_threads()}
    if args.loads_only:
        import transformers

        results = {"command": " ".join(["python", *sys.argv]), "transformers": transformers.__version__, **measure_loads()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))
        return
    if not args.skip_first_load:
        results.update(measure_loads())
    else:
        results["cached_load"] = measure_load(None)

    prompts = (
        bundled("harmful", "train").take(args.n // 2).instructions
        + bundled("harmless", "train").take(args.n - args.n // 2).instructions
    )
    model = load_model()
    texts = model.chat.format_many(prompts)
    n_tokens = sum(len(x) for x in model.tokenizer(texts, add_special_tokens=False)["input_ids"])
    results["n_tokens"] = n_tokens
    middle = model.n_layers // 2

    def hf_forward():
        for batch in iter_batches(model, texts, args.batch_size, progress=False):
            with torch.no_grad():
                model.hf_model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=(batch.attention_mask.cumsum(-1) - 1).clamp_min(0),
                    output_hidden_states=True,
                )

    from mechref.scoring import last_token_logits

    runs = {
        "hf_forward_all_hidden_states": hf_forward,
        "mechref_last_token_logits_no_prefix_reuse": lambda: last_token_logits(
            model, prompts, batch_size=args.batch_size, progress=False, reuse_prefix=False
        ),
        "mechref_last_token_logits_prefix_reuse": lambda: last_token_logits(
            model, prompts, batch_size=args.batch_size, progress=False
        ),
        "mechref_capture_all_layers_5_positions": lambda: capture_residual(
            model, prompts, layers=None, positions="post_instruction", batch_size=args.batch_size, progress=False
        ),
        "mechref_capture_middle_layer_last_position": lambda: capture_residual(
            model, prompts, layers=[middle], positions=-1, batch_size=args.batch_size, progress=False
        ),
    }
    for dtype in ("float32", "bfloat16"):
        model.to(dtype)
        for name, run in runs.items():
            run()  # warm-up: the CPU kernels are set up once per shape and dtype
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            results[f"{dtype}/{name}"] = {"seconds": round(seconds, 2), "tokens_per_s": round(n_tokens / seconds, 1)}
            print(dtype, name, results[f"{dtype}/{name}"], flush=True)
    base = results["float32/hf_forward_all_hidden_states"]["seconds"]
    results["speedup_vs_fp32_hf"] = {
        k: round(base / v["seconds"], 2) for k, v in results.items() if isinstance(v, dict) and "seconds" in v and "/" in k
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
