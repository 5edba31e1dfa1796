"""Refusal direction analysis (Arditi et al. 2024), end to end.

Finds the refusal direction of a chat model (difference-in-means candidates over post-instruction
positions and layers, selected by bypass / induce / KL scores), shows it is necessary (ablating
it removes refusal) and sufficient (adding it induces refusal), removes it from the weights and
optionally saves the edited model, and draws the figures.

    python -m mechref.analyses.refusal_direction                       # embedded model, bundled prompts
    python -m mechref.analyses.refusal_direction --splits ../shared/data/refusal_direction/splits \\
        --n-test 100 --out runs/refusal_direction --export-model runs/qwen-no-refusal

Re-running with the same settings resumes from the artifacts in --out; changed settings recompute
the stages they affect.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from mechref import __version__

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from mechref.cli import add_model_arguments

    parser = argparse.ArgumentParser(prog="python -m mechref.analyses.refusal_direction", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, default_dtype="bfloat16")
    data = parser.add_argument_group("data (default: the bundled English prompts)")
    data.add_argument("--splits", type=Path, help="folder with {harmful,harmless}_{train,val,test}.json (the refusal_direction layout)")
    for label in ("harmful", "harmless"):
        for split in ("train", "val", "test"):
            data.add_argument(f"--{label}-{split}", type=Path, metavar="PATH", help=f"JSON file of {label} {split} prompts")
    data.add_argument("--n-train", type=int, default=128, help="training prompts per class (default 128)")
    data.add_argument("--n-val", type=int, default=32, help="validation prompts per class (default 32)")
    data.add_argument("--n-test", type=int, default=None, help="first N test prompts per class (default: all)")
    data.add_argument("--seed", type=int, default=42, help="sampling seed (default 42, as the paper)")
    data.add_argument("--no-filter", action="store_true", help="skip the paper's refusal-score filter of train/val prompts")
    sel = parser.add_argument_group("selection")
    sel.add_argument("--selection", choices=["fast", "exhaustive"], default="fast",
                     help="fast: proxy ranking then full scores for the top few (default); exhaustive: score every candidate")
    sel.add_argument("--kl-threshold", type=float, default=0.1)
    sel.add_argument("--induce-threshold", type=float, default=0.0)
    sel.add_argument("--prune-layer-fraction", type=float, default=0.2)
    sel.add_argument("--top-k", type=int, default=8, help="fast mode: candidates given full scores per round")
    sel.add_argument("--proxy-prompts", type=int, default=8, help="fast mode: harmful val prompts for the proxy")
    sel.add_argument("--refusal-tokens", type=int, nargs="+", default=None,
                     help="token ids of refusal openings (default: derived from the model's own refusals)")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--max-new-tokens", type=int, default=64)
    ev.add_argument("--judge", choices=["substring", "chat-model"], default="substring",
                    help="refusal judge: phrase list (default) or the model itself asked whether a reply refuses")
    ev.add_argument("--skip-eval", action="store_true", help="stop after selection")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("runs/refusal_direction"))
    out.add_argument("--export-model", type=Path, default=None, metavar="DIR",
                     help="save the orthogonalized model as a Hugging Face folder here")
    out.add_argument("--no-resume", action="store_true", help="recompute every stage")
    out.add_argument("--batch-size", type=int, default=32)
    out.add_argument("--static", nargs="*", default=["png"], help="static figure formats when Chromium is present (default png)")
    return parser


def load_prompt_sets(args) -> dict:
    """Train/val/test prompt sets from the options (bundled by default), sampled as the paper."""
    from mechref.data import bundled, load_prompt_file, load_refusal_direction_splits

    sets = {}
    splits = load_refusal_direction_splits(args.splits) if args.splits else None
    for label in ("harmful", "harmless"):
        for split in ("train", "val", "test"):
            path = getattr(args, f"{label}_{split}")
            if path:
                sets[(label, split)] = load_prompt_file(path, label, split)
            elif splits:
                sets[(label, split)] = splits[(label, split)]
            else:
                sets[(label, split)] = bundled(label, split)
    for label in ("harmful", "harmless"):
        sets[(label, "train")] = sets[(label, "train")].sample(args.n_train, args.seed)
        sets[(label, "val")] = sets[(label, "val")].sample(min(args.n_val, len(sets[(label, "val")])), args.seed)
        if args.n_test:
            sets[(label, "test")] = sets[(label, "test")].take(args.n_test)
    return sets


def main(argv: list[str] | None = None) -> int:
    from mechref.cli import run_command

    return run_command(build_parser(), run, argv)


def run(args, model=None) -> int:
    """Run the analysis for parsed ``args``; pass ``model`` to reuse one already loaded with the same options."""
    import torch

    from mechref.cli import load_from_args
    from mechref.data import PromptSet, filter_by_refusal_score
    from mechref.io import read_json, read_tensors, write_json, write_tensors
    from mechref.plotting import save_figure
    from mechref.refusal.candidates import CandidateDirections, extract_candidates
    from mechref.refusal.evaluation import CONDITIONS, evaluate_condition, read_jsonl, write_jsonl
    from mechref.refusal.figures import condition_bars, cosine_across_layers, score_heatmaps
    from mechref.refusal.orthogonalize import export_orthogonalized
    from mechref.refusal.selection import SelectionResult, SelectionSettings, select_direction, CandidateScores
    from mechref.runs import Run
    from mechref.scoring import ChatModelJudge, RefusalTokens, SubstringJudge, derive_refusal_tokens

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str):
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    print(f"[1/7] loading model {args.model or '(embedded default)'} …", flush=True)
    model = model if model is not None else load_from_args(args)
    lap("load")
    sets = load_prompt_sets(args)
    run_dir = Run(args.out, resume=not args.no_resume)
    base = {"model": model.name, "source": model.source, "dtype": args.dtype, "system_prompt": args.system_prompt}
    fp = {f"{l}_{s}": p.fingerprint() for (l, s), p in sets.items()}

    print("[2/7] refusal tokens …", flush=True)
    if args.refusal_tokens:
        tokens = RefusalTokens(args.refusal_tokens, [model.tokenizer.decode([t]) for t in args.refusal_tokens],
                               [0] * len(args.refusal_tokens), 0, 0)
    else:
        tokens = run_dir.stage(
            "refusal_tokens", {**base, "harmful_train": fp["harmful_train"]},
            lambda: derive_refusal_tokens(model, sets[("harmful", "train")].take(32), batch_size=args.batch_size),
            save=lambda v, d: write_json(d / "refusal_tokens.json", v.to_dict()),
            load=lambda d: RefusalTokens(**read_json(d / "refusal_tokens.json")))
    print(f"      refusal tokens {tokens.tokens} (ids {tokens.token_ids})")
    lap("refusal_tokens")

    if not args.no_filter:
        print("[3/7] filtering train/val prompts by refusal score …", flush=True)
        settings = {**base, **fp, "tokens": tokens.token_ids}

        def do_filter():
            kept = {}
            for split in ("train", "val"):
                kept[split] = filter_by_refusal_score(model, sets[("harmful", split)], sets[("harmless", split)],
                                                      tokens.token_ids, batch_size=args.batch_size)
            return {f"{label}_{split}": pair[i].instructions for split, pair in kept.items()
                    for i, label in enumerate(("harmful", "harmless"))}

        filtered = run_dir.stage("filter", settings, do_filter,
                                 save=lambda v, d: write_json(d / "filtered_prompts.json", v),
                                 load=lambda d: read_json(d / "filtered_prompts.json"))
        for key, instructions in filtered.items():
            label, split = key.split("_")
            before = len(sets[(label, split)])
            sets[(label, split)] = PromptSet(instructions, label, split, source=sets[(label, split)].source)
            print(f"      {key}: kept {len(instructions)} of {before}")
    lap("filter")
    fp = {f"{l}_{s}": p.fingerprint() for (l, s), p in sets.items()}

    print("[4/7] extracting difference-in-means candidates …", flush=True)
    candidates = run_dir.stage(
        "candidates", {**base, "harmful_train": fp["harmful_train"], "harmless_train": fp["harmless_train"]},
        lambda: extract_candidates(model, sets[("harmful", "train")], sets[("harmless", "train")], batch_size=args.batch_size),
        save=lambda v, d: v.save(d / "candidates"), load=lambda d: CandidateDirections.load(d / "candidates"))
    lap("extraction")

    print("[5/7] selecting the direction …", flush=True)
    sel_settings = SelectionSettings(mode=args.selection, kl_threshold=args.kl_threshold, induce_threshold=args.induce_threshold,
                                     prune_layer_fraction=args.prune_layer_fraction, proxy_prompts=args.proxy_prompts,
                                     top_k=args.top_k, batch_size=args.batch_size)

    def load_selection(d):
        data = read_json(d / "selection.json")
        direction = read_tensors(d / "direction.safetensors")["direction"]
        return SelectionResult(position=data["position"], layer=data["layer"], direction=direction,
                               scores=[CandidateScores(**s) for s in data["scores"]],
                               baseline_harmful=data["baseline_refusal_score"]["harmful_val"],
                               baseline_harmless=data["baseline_refusal_score"]["harmless_val"],
                               n_forward_passes=data["n_forward_passes"], n_prompt_passes=data["n_prompt_passes"],
                               settings=SelectionSettings(**data["settings"]))

    def save_selection(v, d):
        write_tensors(d / "direction.safetensors", {"direction": v.direction},
                      metadata={"layer": str(v.layer), "position": str(v.position), "model": model.name})
        write_json(d / "selection.json", v.to_dict())

    from dataclasses import asdict

    selection = run_dir.stage(
        "selection", {**base, **fp, "tokens": tokens.token_ids, "selection": asdict(sel_settings)},
        lambda: select_direction(model, candidates, sets[("harmful", "val")], sets[("harmless", "val")],
                                 tokens.token_ids, sel_settings),
        save=save_selection, load=load_selection)
    chosen = selection.chosen
    print(f"      chosen layer {selection.layer}, position {selection.position} ({model.chat.post_instruction_tokens[selection.position]!r}): "
          f"bypass {chosen.bypass:.3f}, induce {chosen.induce:.3f}, KL {chosen.kl:.4f}; "
          f"{selection.n_forward_passes} forward passes ({selection.n_prompt_passes} prompt passes)")
    lap("selection")

    results = {}
    if not args.skip_eval:
        print("[6/7] evaluating on test prompts …", flush=True)
        judge = SubstringJudge() if args.judge == "substring" else ChatModelJudge(model)
        for condition in CONDITIONS:
            label = condition.split("_")[0]
            prompts = sets[(label, "test")]
            settings = {**base, "prompts": prompts.fingerprint(), "layer": selection.layer, "position": selection.position,
                        "direction_norm": float(selection.direction.norm()), "max_new_tokens": args.max_new_tokens,
                        "judge": args.judge, "tokens": tokens.token_ids}
            rows = run_dir.stage(
                f"eval_{condition}", settings,
                lambda: evaluate_condition(model, condition, prompts, selection.direction, selection.layer, judge=judge,
                                           refusal_tokens=tokens.token_ids, max_new_tokens=args.max_new_tokens,
                                           batch_size=args.batch_size).rows(),
                save=lambda v, d, c=condition: write_jsonl(d / f"completions_{c}.jsonl", v),
                load=lambda d, c=condition: read_jsonl(d / f"completions_{c}.jsonl"))
            rate = sum(r["refusal"] for r in rows) / len(rows)
            score = sum(r["refusal_score"] for r in rows) / len(rows)
            results[condition] = {"refusal_rate": rate, "mean_refusal_score": score, "n": len(rows)}
            print(f"      {condition:18s} refusal rate {rate:.2f}   mean refusal score {score:+.2f}   (n={len(rows)})", flush=True)
        write_jsonl(args.out / "completions.jsonl", [r for c in CONDITIONS for r in read_jsonl(args.out / f"completions_{c}.jsonl")])
    lap("evaluation")

    export_info = None
    if args.export_model:
        print(f"[7/7] exporting the orthogonalized model to {args.export_model} …", flush=True)
        provenance = {"layer": selection.layer, "position": selection.position, "bypass_score": chosen.bypass,
                      "induce_score": chosen.induce, "kl": chosen.kl, "n_train": args.n_train,
                      "harmful_train": sets[("harmful", "train")].source, "harmless_train": sets[("harmless", "train")].source}
        export_orthogonalized(model, selection.direction, args.export_model, provenance=provenance)
        export_info = str(args.export_model)
    lap("export")

    print("      drawing figures …", flush=True)
    figures = []
    figures += save_figure(score_heatmaps(selection, model.n_layers, model.chat.post_instruction_tokens), args.out / "candidate_scores", args.static)
    figures += save_figure(cosine_across_layers(candidates, selection), args.out / "cosine_across_layers", args.static)
    if results:
        figures += save_figure(condition_bars({c: r["refusal_rate"] for c, r in results.items()},
                                              {c: r["mean_refusal_score"] for c, r in results.items()}), args.out / "refusal_by_condition", args.static)
    lap("figures")

    summary = {
        "mechref_version": __version__, "model": model.name, "source": model.source, "dtype": args.dtype,
        "layer": selection.layer, "position": selection.position,
        "position_token": model.chat.post_instruction_tokens[selection.position],
        "kl": chosen.kl, "bypass_score": chosen.bypass, "induce_score": chosen.induce,
        "baseline_refusal_score": {"harmful_val": selection.baseline_harmful, "harmless_val": selection.baseline_harmless},
        "refusal_tokens": tokens.to_dict(),
        "refusal_rate": {c: r["refusal_rate"] for c, r in results.items()},
        "mean_refusal_score": {c: r["mean_refusal_score"] for c, r in results.items()},
        "n_forward_passes_selection": selection.n_forward_passes,
        "n_prompt_passes_selection": selection.n_prompt_passes,
        "selection_mode": selection.settings.mode,
        "data": {f"{l}_{s}": p.describe() for (l, s), p in sets.items()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "exported_model": export_info, "resumed_stages": run_dir.resumed,
        "figures": [str(p) for p in figures], "timings_s": timings,
    }
    write_json(args.out / "summary.json", summary)
    print(f"done in {sum(timings.values()):.0f} s; summary in {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
