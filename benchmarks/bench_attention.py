"""Benchmark: mechref's attention and generation against plain Hugging Face, in one process.

Three measurements on the embedded model (bfloat16), each against plain ``transformers`` (the same
weights loaded without mechref, ``attn_implementation="sdpa"`` and ``"eager"``) at the same batch:

1. **One decoding step** with a key/value cache of 64, 256 and 512 positions (64 rows): mechref's
   grouped-query attention (:mod:`mechref.model.bridge.attention`), the bridge's own attention (which
   repeats the cached keys and values per query head), plain HF sdpa and plain HF eager. Every
   variant steps from a copy of the same cache, twice in turn; the faster round counts.
2. **Greedy generation**, 128 new tokens for the bundled harmless test prompts (up to ``--rows``:
   there are 22) in one batch:
   :func:`mechref.generation.generate_ids` against HF ``generate`` (greedy), tokens per second of
   the replies, and how many replies differ (bfloat16 kernels round differently).
3. **Residual capture**, every layer at the last position of the same prompts: mechref's
   :func:`~mechref.capture.capture_residual` against an HF forward with ``output_hidden_states``.

    python benchmarks/bench_attention.py --out benchmarks/results/attention.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch


@torch.no_grad()
def step_seconds(hf, cache, token, mask, position, steps: int) -> float:
    """Mean seconds of ``steps`` cached decoding steps from a copy of ``cache``."""
    warm = copy.deepcopy(cache)
    hf(input_ids=token, attention_mask=mask, position_ids=position, past_key_values=warm, use_cache=True, logits_to_keep=1)
    cache = copy.deepcopy(cache)  # the warm-up step grew its copy; time from the same length
    start = time.perf_counter()
    for step in range(steps):
        step_mask = torch.cat([mask, mask.new_ones(mask.shape[0], step)], dim=1)
        hf(
            input_ids=token,
            attention_mask=step_mask,
            position_ids=position + step,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return (time.perf_counter() - start) / steps


def hf_replies(hf, model, texts: list[str], batch_size: int, new_tokens: int, stops: list[int]) -> list[list[int]]:
    """Plain HF greedy ``generate`` over ``texts`` in batches, each reply cut after its first stop token."""
    from mechref.model.batching import iter_batches

    replies: dict[int, list[int]] = {}
    for batch in iter_batches(model, texts, batch_size, desc="", progress=False):
        with torch.no_grad():
            out = hf.generate(
                input_ids=batch.input_ids.to(hf.device),
                attention_mask=batch.attention_mask.to(hf.device),
                max_new_tokens=new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=stops,
                pad_token_id=model.tokenizer.pad_token_id,
            )
        for index, row in zip(batch.indices, out[:, batch.input_ids.shape[1] :].tolist()):
            cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            replies[int(index)] = row[:cut]
    return [replies[i] for i in range(len(texts))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--contexts", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/attention.json"))
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    import mechref
    from mechref.capture import capture_residual
    from mechref.data import bundled
    from mechref.generation import generate_ids, stop_token_ids
    from mechref.model.batching import as_texts, iter_batches
    from mechref.model.bridge.attention import bridge_attention
    from mechref.model.embedded import DEFAULT_MODEL, ensure_embedded, find_embedded

    torch.manual_seed(0)
    model = mechref.load_model(dtype="bfloat16")
    embedded = find_embedded(DEFAULT_MODEL)
    assert embedded is not None
    folder = ensure_embedded(embedded, torch.bfloat16)
    plain = {
        kind: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation=kind).eval()
        for kind in ("sdpa", "eager")
    }
    results: dict = {
        "command": "python benchmarks/bench_attention.py",
        "model": model.name,
        "dtype": "bfloat16",
        "torch_threads": torch.get_num_threads(),
        "rows": args.rows,
    }

    # 1. One decoding step against a cache of each length.
    steps: dict = {}
    for context in args.contexts:
        ids = torch.randint(1000, 20000, (args.rows, context))
        mask = torch.ones_like(ids)
        positions = torch.arange(context).expand(args.rows, context)
        with torch.no_grad():
            out = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1)[:, None]
        step_mask = torch.cat([mask, mask.new_ones(args.rows, 1)], dim=1)
        position = torch.full((args.rows, 1), context)
        # Every variant twice, in turn, keeping its faster round: whichever runs first at a new
        # cache length pays for the allocator growing its pools, which is not a property of the variant.
        row: dict = {}
        for _round in range(2):
            cache = out.past_key_values
            timings = {"mechref_grouped": step_seconds(model.hf_model, cache, token, step_mask, position, args.steps)}
            with bridge_attention(model):
                timings["mechref_bridge_attention"] = step_seconds(
                    model.hf_model, out.past_key_values, token, step_mask, position, args.steps
                )
            for kind, hf in plain.items():
                timings[f"hf_{kind}"] = step_seconds(hf, out.past_key_values, token, step_mask, position, args.steps)
            row = {name: min(seconds, row.get(name, seconds)) for name, seconds in timings.items()}
        row = {name: round(seconds, 4) for name, seconds in row.items()}
        row["grouped_vs_bridge_speedup"] = round(row["mechref_bridge_attention"] / row["mechref_grouped"], 2)
        row["grouped_vs_hf_sdpa_speed"] = round(row["hf_sdpa"] / row["mechref_grouped"], 2)
        steps[str(context)] = row
        print("step", context, row, flush=True)
    results["decode_step_seconds_by_cached_positions"] = steps

    # 2. Greedy generation, one batch.
    prompts = bundled("harmless", "test").instructions[: args.rows]
    start = time.perf_counter()
    ours = generate_ids(model, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.rows, progress=False)
    mechref_seconds = time.perf_counter() - start
    texts = as_texts(model, prompts, True, None)
    start = time.perf_counter()
    theirs = hf_replies(plain["sdpa"], model, texts, args.rows, args.max_new_tokens, stop_token_ids(model))
    hf_seconds = time.perf_counter() - start
    tokens = sum(len(r) for r in ours)
    results["generation"] = {
        "prompts": "first harmless test prompts (mechref's bundled English set)",
        "n_prompts": len(prompts),
        "batch_size": args.rows,
        "max_new_tokens": args.max_new_tokens,
        "reply_tokens": {"mechref": tokens, "hf_sdpa_generate": sum(len(r) for r in theirs)},
        "seconds": {"mechref": round(mechref_seconds, 1), "hf_sdpa_generate": round(hf_seconds, 1)},
        "tokens_per_second": {
            "mechref": round(tokens / mechref_seconds, 1),
            "hf_sdpa_generate": round(sum(len(r) for r in theirs) / hf_seconds, 1),
        },
        "replies_differing": sum(a != b for a, b in zip(ours, theirs)),
    }
    g = results["generation"]["tokens_per_second"]
    results["generation"]["mechref_vs_hf_speed"] = round(g["mechref"] / g["hf_sdpa_generate"], 2)
    print("generation", results["generation"], flush=True)

    # 3. Residual capture at every layer, last position.
    batch = next(iter(iter_batches(model, texts, args.rows, desc="", progress=False)))
    start = time.perf_counter()
    capture_residual(model, prompts, positions=-1, batch_size=args.rows, progress=False)
    capture_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        plain["sdpa"](input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    hf_capture_seconds = time.perf_counter() - start
    n_tokens = int(batch.attention_mask.sum())
    results["capture"] = {
        "what": "residual stream entering every layer, last position, one batch",
        "prompt_tokens": n_tokens,
        "seconds": {"mechref_capture_residual": round(capture_seconds, 2), "hf_sdpa_hidden_states": round(hf_capture_seconds, 2)},
        "mechref_vs_hf_speed": round(hf_capture_seconds / capture_seconds, 2),
    }
    print("capture", results["capture"], flush=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
