"""Quickstart: the whole stack in one run on the embedded model.

Loads the model, formats chats, captures the difference-in-means refusal direction at one layer
from the bundled training prompts (running means, no activation cache), then generates replies
to held-out prompts: harmful ones with and without the direction ablated, harmless ones with and
without it added. Prints the replies and refusal rates; writes ``summary.json`` and the direction.

    python -m mechref.analyses.quickstart --n-train 32 --n-eval 6 --out runs/quickstart
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mechref import __version__


def build_parser() -> argparse.ArgumentParser:
    from mechref.cli import add_model_arguments

    parser = argparse.ArgumentParser(prog="python -m mechref.analyses.quickstart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--n-train", type=int, default=32, help="training prompts per class (default 32)")
    parser.add_argument("--n-eval", type=int, default=6, help="held-out prompts per class to generate for (default 6)")
    parser.add_argument("--layer", type=float, default=0.6,
                        help="layer of the direction: an index, or a fraction of the depth (default 0.6)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="output folder (default runs/quickstart)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mechref.cli import load_from_args
    from mechref.data import bundled
    from mechref.generation import generate
    from mechref.hooks import capture_residual
    from mechref.interventions import activation_addition, directional_ablation
    from mechref.io import write_json, write_tensors
    from mechref.scoring import SubstringJudge

    timings = {}
    start = time.perf_counter()
    print("loading the model (the first time assembles and caches the embedded model: about a minute) …", flush=True)
    model = load_from_args(args)
    timings["load_s"] = time.perf_counter() - start
    layer = int(args.layer) if args.layer >= 1 else int(round(args.layer * model.n_layers))
    print(f"{model.name}: {model.n_layers} layers, d_model {model.d_model}, dtype {str(model.dtype).removeprefix('torch.')}; "
          f"direction at layer {layer}, last token")
    print("chat template example:", repr(model.chat.format("How do I bake bread?")))
    print("post-instruction tokens:", model.chat.post_instruction_tokens)

    harmful_train = bundled("harmful", "train").sample(args.n_train, args.seed)
    harmless_train = bundled("harmless", "train").sample(args.n_train, args.seed)
    t = time.perf_counter()
    means = {}
    for prompts in (harmful_train, harmless_train):
        means[prompts.label] = capture_residual(model, prompts, layers=[layer], positions=-1, reduce="mean",
                                                batch_size=args.batch_size, desc=f"mean {prompts.label}")[0, 0]
    direction = (means["harmful"] - means["harmless"]).float()
    timings["direction_s"] = time.perf_counter() - t

    judge = SubstringJudge()
    harmful = bundled("harmful", "test").take(args.n_eval)
    harmless = bundled("harmless", "test").take(args.n_eval)
    gen = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    t = time.perf_counter()
    replies = {"harmful_baseline": generate(model, harmful, **gen)}
    with directional_ablation(model, direction):
        replies["harmful_ablation"] = generate(model, harmful, **gen)
    replies["harmless_baseline"] = generate(model, harmless, **gen)
    with activation_addition(model, direction, layer, coefficient=1.0):
        replies["harmless_actadd"] = generate(model, harmless, **gen)
    timings["generation_s"] = time.perf_counter() - t

    rates = {condition: judge.refusal_rate(texts) for condition, texts in replies.items()}
    for condition, texts in replies.items():
        prompts = harmful if condition.startswith("harmful") else harmless
        print(f"\n== {condition}: refusal rate {rates[condition]:.2f}")
        for prompt, reply in zip(prompts, texts):
            print(f"  [{'REFUSE' if judge(reply) else 'comply'}] {prompt[:60]!r}\n      -> {reply[:100]!r}")

    args.out.mkdir(parents=True, exist_ok=True)
    write_tensors(args.out / "direction.safetensors", {"direction": direction, "mean_harmful": means["harmful"].float(),
                                                       "mean_harmless": means["harmless"].float()})
    timings["total_s"] = time.perf_counter() - start
    summary = {
        "mechref_version": __version__, "model": model.name, "source": model.source,
        "dtype": str(model.dtype).removeprefix("torch."), "layer": layer, "position": -1,
        "n_train": args.n_train, "n_eval": args.n_eval, "seed": args.seed,
        "train_fingerprints": {p.label: p.fingerprint() for p in (harmful_train, harmless_train)},
        "direction_norm": float(direction.norm()), "refusal_rate": rates,
        "replies": {c: [{"prompt": p, "reply": r, "refusal": judge(r)} for p, r in zip(harmful if c.startswith("harmful") else harmless, texts)]
                    for c, texts in replies.items()},
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    write_json(args.out / "summary.json", summary)
    print(f"\nrefusal rates: {', '.join(f'{k} {v:.2f}' for k, v in rates.items())}")
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'direction.safetensors'} ({timings['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
