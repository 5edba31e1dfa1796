"""Benchmark: mechref on one device against plain Hugging Face at the same batch, in one process.

What the device table of docs/results/performance.md needs, measured on whatever ``--device`` names (a CUDA GPU,
or the CPU when there is none), each against plain ``transformers`` (the same weights loaded without
mechref, ``attn_implementation="sdpa"``) or the reference method:

1. **placement**: where the weights are after ``load_model(device=...)``, and what
   ``mechref model info --device`` reports.
2. **batch defaults**: the batch sizes mechref chooses for this device (``mechref.model.devices``).
3. **generation**: greedy replies of ``--new-tokens`` tokens for ``--prompts`` prompts at each batch of
   ``--batches`` (``default`` = the device's choice): mechref's decoder against HF ``generate``.
4. **capture**: the residual stream entering every layer at the last position, against an HF forward
   with ``output_hidden_states``.
5. **DFA**: direct feature attribution of a random direction at the middle layer: time against one
   HF forward over the same prompts, and the completeness residual against its allowance.
6. **decode step**: one cached decoding step (the default batch, ``--contexts`` cached positions),
   mechref against HF sdpa; on a GPU with no pattern hook this is torch's fused kernel, so the step
   also checks that the fused path gives the bridge's own attention's logits.
7. **overhead**: a decoding step of a 28-layer model of width 64 (one row), where arithmetic is
   free and what remains is what each side adds per call: mechref, mechref with the bridge's own
   norms and attention, plain HF.
8. **GCG**: seconds per step of :func:`mechref.attacks.gcg.search_suffix` against a plain-HF step (the
   one-hot gradient through ``inputs_embeds``, candidate losses by full forwards at the same batch).
9. **device map** (CUDA only): a tiny model split between the GPU and the CPU gives the single
   device's logits and greedy replies.
10. **refusal_direction end to end**: the CLI on this device, timed (``--cli``; its extra flags after
   ``--cli-args``, e.g. the relaxed filters a random-weight model needs).

A section that fails is recorded with its error in the JSON and makes the command exit 1 after the
others ran (a GPU session is short; one broken section must not lose the rest).

    python benchmarks/bench_devices.py --device cpu --prompts 32 --batches 16 --out /tmp/devices_cpu.json
    python benchmarks/bench_devices.py --model .gpu/qwen2.5-1.5b-random --device cuda \\
        --cli --cli-args "--refusal-tokens 40 --kl-threshold 1e9 --induce-threshold=-1e9 --judge substring" \\
        --out benchmarks/results/devices_h200.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_attention import hf_replies, step_seconds

SECTIONS = (
    "placement",
    "batch_defaults",
    "generation",
    "capture",
    "dfa",
    "decode_step",
    "overhead",
    "gcg",
    "device_map",
    "refusal_direction_cli",
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``work`` takes, the device's queue drained on both sides."""
    sync(device)
    start = time.perf_counter()
    out = work()
    sync(device)
    return time.perf_counter() - start, out


def plain_gcg_step(
    hf, layouts, suffix: list[int], allowed: torch.Tensor, n_candidates: int, top_k: int, batch_size: int, generator
):
    """One GCG step the plain way: gradient through ``inputs_embeds`` for each prompt, candidate
    losses by full forward passes (no cached prefix), best candidate returned."""
    embed = hf.get_input_embeddings()
    weight = embed.weight
    device = weight.device
    one_hot = torch.zeros(len(suffix), weight.shape[0], dtype=weight.dtype, device=device)
    one_hot[torch.arange(len(suffix)), torch.tensor(suffix, device=device)] = 1
    one_hot.requires_grad_(True)
    grad = torch.zeros_like(one_hot)
    for lay in layouts:
        ids = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)
        inputs = torch.cat([embed(ids(lay.before)), one_hot @ weight, embed(ids(lay.after + lay.target))]).unsqueeze(0)
        logits = hf(inputs_embeds=inputs).logits[0, -len(lay.target) - 1 : -1].float()
        loss = torch.nn.functional.cross_entropy(logits, ids(lay.target))
        grad += torch.autograd.grad(loss, one_hot)[0]
    grad = grad.float().cpu()
    grad[:, ~allowed[: grad.shape[1]]] = float("inf")
    top = (-grad).topk(top_k, dim=1).indices
    positions = torch.randint(0, len(suffix), (n_candidates,), generator=generator)
    choices = torch.randint(0, top_k, (n_candidates,), generator=generator)
    candidates = torch.tensor(suffix).repeat(n_candidates, 1)
    candidates[torch.arange(n_candidates), positions] = top[positions, choices]
    losses = torch.zeros(n_candidates, dtype=torch.float64)
    with torch.no_grad():
        for lay in layouts:
            n_target = len(lay.target)
            for start in range(0, n_candidates, batch_size):
                chunk = candidates[start : start + batch_size]
                rows = len(chunk)
                ids = torch.cat(
                    [torch.tensor(lay.before).expand(rows, -1), chunk, torch.tensor(lay.after + lay.target).expand(rows, -1)], 1
                )
                logits = hf(input_ids=ids.to(device), logits_to_keep=n_target + 1).logits[:, :-1].float()
                target = torch.tensor(lay.target, device=device).expand(rows, -1)
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
                )
                losses[start : start + rows] += loss.view(rows, n_target).mean(1).double().cpu()
    return candidates[int(losses.argmin())].tolist()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model name or folder (default: the embedded model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--prompts", type=int, default=256, help="prompts generated and captured")
    parser.add_argument("--batches", nargs="+", default=["32", "default"], help="generation batches ('default': the device's)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--contexts", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--gcg-steps", type=int, default=3)
    parser.add_argument("--cli", action="store_true", help="also time the refusal_direction CLI end to end")
    parser.add_argument("--cli-args", default="", help="extra flags for the refusal_direction CLI")
    parser.add_argument("--cli-out", type=Path, default=None, help="keep the CLI's run in this folder (default: a temporary one)")
    parser.add_argument("--sections", nargs="+", default=None, help="run only these sections")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    unknown = set(args.sections or []) - set(SECTIONS)
    if unknown:  # before the model loads
        parser.error(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")

    from transformers import AutoModelForCausalLM

    import mechref
    from mechref.model.devices import rows_for_memory
    from mechref.model.embedded import DEFAULT_MODEL, ensure_embedded, find_embedded

    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    load_seconds, model = timed(torch.device("cpu"), lambda: mechref.load_model(args.model, dtype=args.dtype, device=args.device))
    device = model.device
    if args.model is None:
        embedded = find_embedded(DEFAULT_MODEL)
        assert embedded is not None
        folder = str(ensure_embedded(embedded, dtype))
    else:
        folder = args.model
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    results: dict[str, Any] = {
        "command": "python benchmarks/bench_devices.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "model": model.name,
        "dtype": args.dtype,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "load_seconds": round(load_seconds, 1),
        "errors": {},
    }
    print(f"{model.name} on {results['device_name']}", flush=True)

    from mechref.data import bundled

    pool = bundled("harmful", "train").instructions + bundled("harmless", "train").instructions
    prompts = [pool[i % len(pool)] for i in range(args.prompts)]
    generation_default = rows_for_memory(model, 128)
    batches = sorted({generation_default if b == "default" else int(b) for b in args.batches})

    def placement() -> dict:
        info = subprocess.run(
            [sys.executable, "-m", "mechref", "model", "info", "--device", args.device, "--dtype", args.dtype]
            + (["--model", args.model] if args.model else []),
            capture_output=True,
            text=True,
            check=True,
        )
        return {
            "parameter_devices": sorted({str(p.device) for p in model.hf_model.parameters()}),
            "model_info_device": json.loads(info.stdout)["device"],
        }

    def batch_defaults() -> dict:
        out: dict[str, Any] = {"batch_size (capture; default 32)": rows_for_memory(model, 32)}
        out["generation_batch_size (default 128)"] = generation_default
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            out["free_gib_at_choice"], out["total_gib"] = round(free / 2**30, 1), round(total / 2**30, 1)
        return out

    def generation() -> dict:
        from mechref.generation import generate_ids, stop_token_ids
        from mechref.model.batching import as_texts

        stops = stop_token_ids(model)
        texts = as_texts(model, prompts, True, None)
        rows: dict[str, Any] = {}
        for batch in batches:
            # A warm-up of each at this batch (kernels chosen, allocator grown), then each timed in turn.
            warm = prompts[:batch]
            generate_ids(model, warm, max_new_tokens=4, batch_size=batch, progress=False)
            hf_replies(hf, model, as_texts(model, warm, True, None), batch, 4, stops)
            ours_s, ours = timed(
                device,
                lambda batch=batch: generate_ids(
                    model, prompts, max_new_tokens=args.new_tokens, batch_size=batch, progress=False
                ),
            )
            hf_s, theirs = timed(device, lambda batch=batch: hf_replies(hf, model, texts, batch, args.new_tokens, stops))
            tokens, hf_tokens = sum(map(len, ours)), sum(map(len, theirs))
            rows[str(batch)] = {
                "seconds": {"mechref": round(ours_s, 2), "hf_sdpa_generate": round(hf_s, 2)},
                "reply_tokens": {"mechref": tokens, "hf_sdpa_generate": hf_tokens},
                "tokens_per_second": {"mechref": round(tokens / ours_s, 1), "hf_sdpa_generate": round(hf_tokens / hf_s, 1)},
                "mechref_vs_hf_speed": round((tokens / ours_s) / (hf_tokens / hf_s), 2),
                "replies_differing": sum(a != b for a, b in zip(ours, theirs)),
            }
            print("generation", batch, rows[str(batch)], flush=True)
        return {"n_prompts": len(prompts), "new_tokens": args.new_tokens, "by_batch": rows}

    def capture() -> dict:
        from mechref.capture import capture_residual
        from mechref.model.batching import iter_batches

        batch = rows_for_memory(model, 32)
        texts = model.chat.format_many(prompts)

        def plain() -> None:
            with torch.no_grad():
                for b in iter_batches(model, texts, batch, desc="", progress=False):
                    hf(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device), output_hidden_states=True)

        run = lambda: capture_residual(model, prompts, positions=-1, batch_size=batch, progress=False)
        run(), plain()  # warm-up
        ours_s, _ = timed(device, run)
        hf_s, _ = timed(device, plain)
        return {
            "batch_size": batch,
            "prompt_tokens": sum(len(t) for t in model.tokenizer(texts, add_special_tokens=False)["input_ids"]),
            "seconds": {"mechref_capture_residual": round(ours_s, 3), "hf_sdpa_hidden_states": round(hf_s, 3)},
            "mechref_vs_hf_speed": round(hf_s / ours_s, 2),
        }

    def dfa() -> dict:
        from mechref.attribution import direct_feature_attribution
        from mechref.model.batching import iter_batches

        batch = rows_for_memory(model, 32)
        direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
        layer = model.n_layers // 2
        texts = model.chat.format_many(prompts)

        def plain() -> None:
            with torch.no_grad():
                for b in iter_batches(model, texts, batch, desc="", progress=False):
                    hf(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device), logits_to_keep=1)

        run = lambda: direct_feature_attribution(model, prompts, direction, layer=layer, batch_size=batch, progress=False)
        run(), plain()
        ours_s, attribution = timed(device, run)
        hf_s, _ = timed(device, plain)
        attribution.check()
        error = attribution.residual_error.abs()
        return {
            "layer": layer,
            "batch_size": batch,
            "seconds": {"mechref_dfa": round(ours_s, 3), "hf_sdpa_forward_all_layers": round(hf_s, 3)},
            "dfa_cost_in_hf_forwards": round(ours_s / hf_s, 2),
            "max_abs_projection": round(float(attribution.projection.abs().max()), 3),
            "max_completeness_error": float(error.max()),
            "max_error_over_allowance": round(float((error / attribution.allowed_error).max()), 4),
            "check_passes": True,
        }

    def decode_step() -> dict:
        from mechref.model.bridge.attention import bridge_attention

        rows = rows_for_memory(model, 64)
        out: dict[str, Any] = {"rows": rows}
        for context in args.contexts:
            ids = torch.randint(1000, 20000, (rows, context), device=device)
            mask = torch.ones_like(ids)
            positions = torch.arange(context, device=device).expand(rows, context)
            with torch.no_grad():
                first = model.hf_model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
                )
            token = first.logits[:, -1].argmax(-1)[:, None]
            step_mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
            position = torch.full((rows, 1), context, device=device)
            row: dict[str, float] = {}
            for _round in range(2):
                timings = {
                    "mechref": step_seconds(model.hf_model, first.past_key_values, token, step_mask, position, 6),
                    "hf_sdpa": step_seconds(hf, first.past_key_values, token, step_mask, position, 6),
                }
                with bridge_attention(model):
                    timings["mechref_bridge_attention"] = step_seconds(
                        model.hf_model, first.past_key_values, token, step_mask, position, 6
                    )
                row = {k: min(v, row.get(k, v)) for k, v in timings.items()}
            row = {k: round(v, 5) for k, v in row.items()}
            row["mechref_vs_hf_speed"] = round(row["hf_sdpa"] / row["mechref"], 2)
            out[str(context)] = row
            print("decode step", context, row, flush=True)
        # The path a GPU takes with no pattern hook (fused kernel) against the bridge's own attention.
        texts = model.chat.format_many(prompts[:8])
        ids, mask = model.tokenize(texts)
        with torch.no_grad():
            fast = model.forward(ids, mask).float()
            with bridge_attention(model):
                reference = model.forward(ids, mask).float()
        real = mask.bool().to(fast.device)
        out["logits_max_abs_diff_vs_bridge_attention"] = float((fast - reference)[real].abs().max())
        out["logits_scale"] = float(reference[real].abs().max())
        return out

    def overhead() -> dict:
        """What the bridge adds per decoding step where arithmetic costs nothing: a 28-layer model of
        width 64, one row. On a GPU a 1.5B model's step is close to this regime (launch-bound)."""
        from mechref.model.bridge.attention import bridge_attention
        from mechref.model.bridge.norms import bridge_forwards
        from mechref.testing import tiny_hf_model, tiny_tokenizer

        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = tiny_tokenizer()
            tiny_hf_model("qwen2", vocab_size=len(tokenizer), n_layers=28).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            small = mechref.load_model(tmp, device=str(device))
            plain = AutoModelForCausalLM.from_pretrained(tmp, attn_implementation="sdpa").to(device).eval()
        ids = torch.randint(5, 100, (1, 16), device=device)
        mask = torch.ones_like(ids)
        with torch.no_grad():
            first = small.hf_model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
        token = first.logits[:, -1].argmax(-1)[:, None]
        step_mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
        position = torch.full((1, 1), ids.shape[1], device=device)
        step = lambda hf_model: step_seconds(hf_model, first.past_key_values, token, step_mask, position, 50)
        row: dict[str, float] = {}
        for _round in range(2):
            timings = {"mechref": step(small.hf_model), "hf_sdpa": step(plain)}
            with bridge_forwards(small):
                timings["mechref_bridge_norms"] = step(small.hf_model)
                with bridge_attention(small):
                    timings["mechref_bridge_norms_and_attention"] = step(small.hf_model)
            row = {k: min(v, row.get(k, v)) for k, v in timings.items()}
        out: dict[str, Any] = {"what": "one cached decoding step, tiny qwen2 (28 layers, width 64), one row"}
        out["ms_per_step"] = {k: round(v * 1e3, 2) for k, v in row.items()}
        out["mechref_vs_hf_speed"] = round(row["hf_sdpa"] / row["mechref"], 2)
        return out

    def gcg() -> dict:
        from mechref.attacks.gcg import SearchSettings, _layout, allowed_token_mask, search_suffix

        gcg_prompts = bundled("harmful", "train").instructions[:2]
        settings = SearchSettings(steps=args.gcg_steps, early_stop_loss=None)
        search_suffix(model, gcg_prompts, settings=SearchSettings(steps=1, early_stop_loss=None), progress=False)  # warm-up
        ours_s, _ = timed(device, lambda: search_suffix(model, gcg_prompts, settings=settings, progress=False))
        layouts = [_layout(model, p, "Sure, here is") for p in gcg_prompts]
        allowed = allowed_token_mask(model)
        init = model.tokenizer(settings.init_token, add_special_tokens=False)["input_ids"]
        suffix = (init * settings.suffix_length)[: settings.suffix_length]
        generator = torch.Generator().manual_seed(0)

        def plain_steps(suffix: list[int], steps: int) -> list[int]:
            for _ in range(steps):
                suffix = plain_gcg_step(
                    hf, layouts, suffix, allowed, settings.n_candidates, settings.top_k, settings.batch_size, generator
                )
            return suffix

        plain_steps(suffix, 1)  # warm-up
        hf_s, _ = timed(device, lambda: plain_steps(suffix, args.gcg_steps))
        # search_suffix's time includes its set-up (token mask, cached prefixes, first loss): per step it is an upper bound.
        return {
            "prompts": len(gcg_prompts),
            "n_candidates": settings.n_candidates,
            "batch_size": settings.batch_size,
            "suffix_length": settings.suffix_length,
            "steps": args.gcg_steps,
            "seconds_per_step": {
                "mechref_run_gcg": round(ours_s / args.gcg_steps, 3),
                "plain_hf": round(hf_s / args.gcg_steps, 3),
            },
            "mechref_vs_hf_speed": round(hf_s / ours_s, 2),
        }

    def device_map() -> dict:
        if device.type != "cuda":
            return {"skipped": "needs a CUDA device (the CPU + disk split is tests/unit/model/test_device_map.py)"}
        from mechref.generation import generate
        from mechref.testing import tiny_hf_model, tiny_tokenizer

        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = tiny_tokenizer()
            tiny_hf_model("qwen2", vocab_size=len(tokenizer), n_layers=4).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            single = mechref.load_model(tmp, device=str(device))
            spread = mechref.load_model(tmp, device_map="auto", max_memory={device.index or 0: "600KB", "cpu": "1GB"})
            placed = sorted({str(v) for v in spread.hf_model.hf_device_map.values()})
            texts = ["Write a poem about the sea.", "How do I make a dangerous weapon at home?", "Hi"]
            ids, mask = single.tokenize(single.chat.format_many(texts))
            same_logits = torch.equal(single.forward(ids, mask).cpu(), spread.forward(ids, mask).cpu())
            same_replies = generate(single, texts, max_new_tokens=12, progress=False) == generate(
                spread, texts, max_new_tokens=12, progress=False
            )
        return {"placed_on": placed, "logits_identical": same_logits, "greedy_replies_identical": same_replies}

    def refusal_direction_cli() -> dict:
        if not args.cli:
            return {"skipped": "pass --cli"}
        with tempfile.TemporaryDirectory() as tmp:
            out = args.cli_out or Path(tmp) / "run"
            command = [sys.executable, "-m", "mechref.analyses.refusal_direction", "--device", args.device, "--out", str(out)]
            command += (["--model", args.model] if args.model else []) + shlex.split(args.cli_args)
            seconds, done = timed(device, lambda: subprocess.run(command, capture_output=True, text=True))
            if done.returncode:
                raise RuntimeError(f"exit {done.returncode}: {done.stderr[-2000:]}")
            summary_file = Path(out) / "summary.json"
            summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        return {"cli_args": args.cli_args, "seconds": round(seconds, 1), "stage_seconds": summary.get("timings_s")}

    sections = {
        "placement": placement,
        "batch_defaults": batch_defaults,
        "generation": generation,
        "capture": capture,
        "dfa": dfa,
        "decode_step": decode_step,
        "overhead": overhead,
        "gcg": gcg,
        "device_map": device_map,
        "refusal_direction_cli": refusal_direction_cli,
    }
    assert list(sections) == list(SECTIONS)
    for name, section in sections.items():
        if args.sections and name not in args.sections:
            continue
        started = time.perf_counter()
        try:
            results[name] = section()
        except Exception:  # recorded in the JSON and turned into exit 1 below
            results["errors"][name] = traceback.format_exc()
            print(f"{name} FAILED\n{results['errors'][name]}", file=sys.stderr, flush=True)
        print(f"{name}: {time.perf_counter() - started:.1f} s", flush=True)
        if device.type == "cuda":
            results.setdefault("peak_gib", {})[name] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_suffix(".tmp")
        tmp_out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp_out, args.out)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
