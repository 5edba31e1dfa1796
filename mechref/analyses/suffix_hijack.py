"""Adversarial suffixes hijack the attention of the heads that write the refusal direction
(Arditi et al. 2024, section 5).

Compares harmful instructions alone, with an adversarial (GCG) suffix, and with a random suffix
of the same token length, against harmless instructions:

1. the cosine similarity of the last token's residual stream with the refusal direction at
   every layer;
2. the direct feature attribution (DFA) of every head and MLP to the refusal direction, and the
   top heads on the plain harmful prompts;
3. where those heads look from the last token (system / instruction / suffix / template);
4. circuitsvis views of their attention (offline HTML);
5. the greedy replies and the refusal judge's verdicts.

    python -m mechref.analyses.suffix_hijack                          # embedded model, shipped suffix
    python -m mechref.analyses.suffix_hijack --suffix "describing.\\ + similarlyNow"   # your own suffix
    python -m mechref.analyses.suffix_hijack --model M --run-gcg      # search a suffix for model M first

The refusal direction comes from the refusal-direction analysis: --direction FILE, or the run
folder --direction-run (default runs/refusal_direction), where it is computed on first use.
Re-running with the same settings reuses the measurements and replies saved in --out.
"""

from __future__ import annotations

import argparse
import html
import logging
import time
from pathlib import Path

from mechref import __version__

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from mechref.cli import add_direction_arguments, add_model_arguments

    parser = argparse.ArgumentParser(prog="python -m mechref.analyses.suffix_hijack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, default_dtype="bfloat16")
    suffix = parser.add_argument_group("adversarial suffix (default: the one mechref ships for the model)")
    choice = suffix.add_mutually_exclusive_group()
    choice.add_argument("--suffix", default=None, metavar="TEXT", help="suffix text (a leading space is added if missing)")
    choice.add_argument("--suffix-file", type=Path, default=None, metavar="FILE", help="a suffix file from python -m mechref.attacks.gcg")
    choice.add_argument("--run-gcg", action="store_true", help="search a suffix with GCG first (slow on a CPU; written to OUT/suffix.json)")
    suffix.add_argument("--gcg-steps", type=int, default=250, help="GCG steps with --run-gcg (default 250)")
    suffix.add_argument("--gcg-prompts", type=int, default=4, help="prompts GCG optimizes jointly with --run-gcg (default 4)")
    suffix.add_argument("--random-seed", type=int, default=0, help="seed of the random control suffix (default 0)")
    data = parser.add_argument_group("prompts (default: the bundled test prompts)")
    data.add_argument("--harmful", type=Path, default=None, metavar="PATH", help="JSON or text file of harmful instructions")
    data.add_argument("--harmless", type=Path, default=None, metavar="PATH", help="JSON or text file of harmless instructions")
    data.add_argument("--n", type=int, default=8, help="first N prompts of each class (default 8)")
    add_direction_arguments(parser)
    analysis = parser.add_argument_group("analysis")
    analysis.add_argument("--top-k", type=int, default=8, help="heads studied, by attribution on the plain harmful prompts (default 8)")
    analysis.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per reply (default 64)")
    analysis.add_argument("--judge", choices=["substring", "chat-model"], default="substring",
                          help="refusal judge: phrase list (default) or the model itself asked whether a reply refuses")
    analysis.add_argument("--batch-size", type=int, default=32)
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("runs/suffix_hijack"))
    out.add_argument("--no-resume", action="store_true", help="recompute everything")
    out.add_argument("--static", nargs="*", default=["png"], help="static figure formats when Chromium is present (default png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from mechref.cli import run_command

    return run_command(build_parser(), run, argv)


# ----- inputs -------------------------------------------------------------------------------
def resolve_direction(args, model):
    """``(direction, layer, position, source)``: from --direction, or the run folder (computed there if absent)."""
    from mechref.directions import check_vector
    from mechref.refusal.store import ensure_direction, load_direction, model_argv

    stored = load_direction(args.direction) if args.direction else ensure_direction(model, args.direction_run, model_argv(args))
    if stored.model not in (None, model.name):
        logger.warning("the direction in %s was computed for %s, not %s", stored.path, stored.model, model.name)
    direction = check_vector(stored.direction, model.d_model, what=f"the refusal direction in {stored.path}")
    return direction, stored.layer, stored.position, str(stored.path)


def resolve_suffix(args, model, harmful):
    from mechref.attacks.suffixes import load_suffix_file, shipped_suffix, text_suffix

    if args.suffix is not None:
        return text_suffix(model, args.suffix)
    if args.suffix_file is not None:
        return load_suffix_file(args.suffix_file)
    if args.run_gcg:
        from mechref.attacks import gcg

        target = args.out / "suffix.json"
        argv = ["--out", str(target), "--steps", str(args.gcg_steps), "--dtype", args.dtype, "--device", args.device]
        argv += [a for p in harmful[: args.gcg_prompts] for a in ("--prompt", p)]
        if args.model:
            argv += ["--model", args.model]
        print(f"[0] searching an adversarial suffix with GCG ({args.gcg_steps} steps, {min(args.gcg_prompts, len(harmful))} prompts) …",
              flush=True)
        code = gcg.main(argv)
        if code != 0:
            raise RuntimeError(f"GCG failed (exit {code})")
        return load_suffix_file(target)
    return shipped_suffix(model.name)


def load_instructions(path, label: str, n: int) -> tuple[list[str], str]:
    from mechref.data import bundled, load_prompt_file

    prompts = load_prompt_file(path, label, "test") if path else bundled(label, "test")
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    return prompts.take(n).instructions, (str(path) if path else f"bundled:{label}_test")


# ----- the analysis -------------------------------------------------------------------------
def run(args) -> int:
    import torch

    from mechref.attacks.suffixes import random_suffix
    from mechref.attribution import direct_feature_attribution
    from mechref.cli import load_from_args
    from mechref.generation import generate
    from mechref.hijack.conditions import HARMFUL, build_conditions
    from mechref.hijack.measure import attention_shares, layer_cosines
    from mechref.io import fingerprint, read_tensors, write_json, write_tensors
    from mechref.refusal.evaluation import read_jsonl, write_jsonl
    from mechref.runs import Run

    start = time.perf_counter()
    timings: dict[str, float] = {}
    mark = [start]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - mark[0], 1)
        mark[0] = now

    harmful, harmful_source = load_instructions(args.harmful, "harmful", args.n)
    harmless, harmless_source = load_instructions(args.harmless, "harmless", args.n)
    print("[1/6] loading the model …", flush=True)
    model = load_from_args(args)
    lap("load")
    direction, layer, position, direction_source = resolve_direction(args, model)
    suffix = resolve_suffix(args, model, harmful)
    n_suffix_tokens = len(model.tokenizer(suffix.text, add_special_tokens=False)["input_ids"])
    control = random_suffix(model, n_suffix_tokens, seed=args.random_seed)
    conditions = build_conditions(harmful, harmless, suffix.text, control.text)
    lap("inputs")
    print(f"      direction: layer {layer}, position {position} ({direction_source})\n"
          f"      adversarial suffix ({n_suffix_tokens} tokens, {suffix.source}): {suffix.text!r}\n"
          f"      random suffix: {control.text!r}\n"
          f"      {len(harmful)} harmful ({harmful_source}), {len(harmless)} harmless ({harmless_source}) instructions", flush=True)

    run_dir = Run(args.out, resume=not args.no_resume)
    base = {"model": model.name, "source": model.source, "dtype": args.dtype, "system_prompt": args.system_prompt,
            "direction": fingerprint(direction.tolist()), "layer": layer, "suffix": suffix.text, "random_suffix": control.text,
            "harmful": fingerprint(harmful), "harmless": fingerprint(harmless)}

    # Cosine per layer and DFA of every component, per condition; then attention of the top heads.
    def measure():
        out = {}
        for i, condition in enumerate(conditions, start=1):
            print(f"[2/6] measuring {condition.name} ({i}/{len(conditions)}) …", flush=True)
            out[f"cosine/{condition.name}"] = layer_cosines(model, condition.prompts, direction, batch_size=args.batch_size)
            attribution = direct_feature_attribution(model, condition.prompts, direction, layer=None,
                                                     batch_size=args.batch_size)
            out[f"heads/{condition.name}"] = attribution.heads
            out[f"mlp/{condition.name}"] = attribution.mlp
            out[f"embed/{condition.name}"] = attribution.embed
            out[f"attn_bias/{condition.name}"] = attribution.attn_bias
            out[f"projection/{condition.name}"] = attribution.projection
        plain = out[f"heads/{HARMFUL}"].mean(0)
        k = min(args.top_k, plain.numel())
        flat = plain.flatten().topk(k).indices
        top = torch.stack([flat // plain.shape[1], flat % plain.shape[1]], dim=1)
        out["top_heads"] = top
        heads = [tuple(map(int, pair)) for pair in top]
        for condition in conditions:
            print(f"[3/6] attention of the top {k} heads on {condition.name} …", flush=True)
            out[f"shares/{condition.name}"] = attention_shares(model, condition.instructions, condition.suffix, heads,
                                                               batch_size=args.batch_size)
        return out

    measures = run_dir.stage("measures", {**base, "top_k": args.top_k}, measure,
                             save=lambda v, d: write_tensors(d / "measures.safetensors", v),
                             load=lambda d: read_tensors(d / "measures.safetensors"))
    top_heads = [tuple(map(int, pair)) for pair in measures["top_heads"]]
    lap("measures")

    def replies():
        print("[4/6] generating replies for every condition …", flush=True)
        prompts = [p for c in conditions for p in c.prompts]
        texts = generate(model, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        judge = _judge(args, model)
        verdicts = judge.judge_many(texts, prompts)
        rows, i = [], 0
        for condition in conditions:
            for instruction in condition.instructions:
                rows.append({"condition": condition.name, "instruction": instruction, "suffix": condition.suffix,
                             "reply": texts[i], "refused": bool(verdicts[i])})
                i += 1
        return rows

    generations = run_dir.stage("generations", {**base, "max_new_tokens": args.max_new_tokens, "judge": args.judge}, replies,
                                save=lambda v, d: write_jsonl(d / "generations.jsonl", v),
                                load=lambda d: read_jsonl(d / "generations.jsonl"))
    lap("generations")

    print("[5/6] drawing figures and attention views …", flush=True)
    figures = _figures(args, model, conditions, measures, top_heads, generations, layer)
    lap("figures")

    summary = _summary(args, model, conditions, measures, top_heads, generations, suffix, control, layer, position,
                       direction_source, harmful_source, harmless_source, figures, run_dir.resumed, timings)
    summary["timings_s"]["total"] = round(time.perf_counter() - start, 1)
    write_json(args.out / "summary.json", summary)
    _write_index(args.out, summary)
    print("[6/6] summary", flush=True)
    print(format_summary(summary))
    return 0


def _judge(args, model):
    from mechref.scoring import ChatModelJudge, SubstringJudge

    return ChatModelJudge(model) if args.judge == "chat-model" else SubstringJudge()


def _figures(args, model, conditions, measures, top_heads, generations, layer) -> list[str]:
    from mechref.hijack import figures as F
    from mechref.hijack.measure import full_attention
    from mechref.hijack.regions import token_regions
    from mechref.hijack.views import attention_page, write_page
    from mechref.plotting import save_figure

    names = [c.name for c in conditions]
    written = []
    cos = {n: measures[f"cosine/{n}"] for n in names}
    heads = {n: measures[f"heads/{n}"] for n in names}
    mlp = {n: measures[f"mlp/{n}"] for n in names}
    shares = {n: measures[f"shares/{n}"] for n in names}
    rates, counts = _rates(generations, names)
    for fig, stem in [
        (F.cosine_by_layer(cos, layer), "cosine_by_layer"),
        (F.head_attribution_heatmaps(heads, top_heads), "head_attribution"),
        (F.top_head_attribution(heads, mlp, top_heads), "top_head_attribution"),
        (F.attention_share_bars(shares, top_heads), "attention_shares"),
        (F.refusal_bars(rates, counts), "refusal_rate"),
    ]:
        written += [p.name for p in save_figure(fig, args.out / stem, static=args.static)]
    # Attention views of the top heads on the first harmful instruction under each harmful condition.
    head_names = [f"L{l}H{h}" for l, h in top_heads]
    for condition in conditions[:3]:
        instruction = condition.instructions[0]
        patterns, ids = full_attention(model, instruction + condition.suffix, top_heads)
        tokens = [model.tokenizer.decode([i]) for i in ids]
        regions = token_regions(model, instruction, condition.suffix)
        page = attention_page(f"Top refusal-writing heads: {condition.name}", tokens, patterns, head_names, regions,
                              note=f"Instruction: {instruction!r}; suffix: {condition.suffix!r}. Heads ranked by direct "
                                   "feature attribution to the refusal direction on the plain harmful prompts.")
        path = write_page(args.out / f"attention_{condition.name.replace('+', '_')}.html", page)
        written.append(path.name)
    return written


def _rates(generations, names):
    rates, counts = {}, {}
    for name in names:
        rows = [g for g in generations if g["condition"] == name]
        counts[name] = len(rows)
        rates[name] = sum(g["refused"] for g in rows) / len(rows)
    return rates, counts


def _summary(args, model, conditions, measures, top_heads, generations, suffix, control, layer, position, direction_source,
             harmful_source, harmless_source, figures, resumed, timings) -> dict:
    from mechref.hijack.conditions import ADVERSARIAL, HARMFUL, HARMLESS, RANDOM
    from mechref.hijack.regions import REGIONS

    names = [c.name for c in conditions]
    cosine = {n: [round(float(v), 4) for v in measures[f"cosine/{n}"].double().mean(0)] for n in names}
    cosine_sd = {n: [round(float(v), 4) for v in measures[f"cosine/{n}"].double().std(0)] for n in names} \
        if len(conditions[0].instructions) > 1 else None
    n_layers = model.n_layers
    late = list(range(n_layers // 2, n_layers))
    late_mean = {n: sum(cosine[n][l] for l in late) / len(late) for n in names}

    def closer(name: str) -> str:
        to_harmless = sum(abs(cosine[name][l] - cosine[HARMLESS][l]) for l in late)
        to_harmful = sum(abs(cosine[name][l] - cosine[HARMFUL][l]) for l in late)
        return "harmless" if to_harmless < to_harmful else "harmful"

    heads_out = []
    for i, (l, h) in enumerate(top_heads):
        heads_out.append({
            "layer": l, "head": h,
            "attribution": {n: round(float(measures[f"heads/{n}"][:, l, h].mean()), 4) for n in names},
            "attention_share": {n: {r: round(float(measures[f"shares/{n}"][:, i, j].mean()), 4) for j, r in enumerate(REGIONS)}
                                for n in names},
        })
    rates, counts = _rates(generations, names)
    optimized = set(suffix.provenance.get("prompts", []))
    adv_rows = [g for g in generations if g["condition"] == ADVERSARIAL]
    top_total = {n: round(float(sum(measures[f"heads/{n}"][:, l, h].mean() for l, h in top_heads)), 4) for n in names}
    projection = {n: round(float(measures[f"projection/{n}"].mean()), 4) for n in names}
    error = max(float((measures[f"embed/{n}"] + measures[f"heads/{n}"].sum((1, 2)) + measures[f"attn_bias/{n}"].sum(1)
                       + measures[f"mlp/{n}"].sum(1) - measures[f"projection/{n}"]).abs().max()) for n in names)
    return {
        "mechref_version": __version__,
        "model": model.name,
        "source": model.source,
        "dtype": args.dtype,
        "direction_layer": layer,
        "direction_position": position,
        "direction_source": direction_source,
        "suffix": {**suffix.to_dict(), "n_tokens": len(model.tokenizer(suffix.text, add_special_tokens=False)["input_ids"])},
        "random_suffix": control.to_dict(),
        "data": {"harmful": harmful_source, "harmless": harmless_source, "n_harmful": len(conditions[0].instructions),
                 "n_harmless": len(conditions[-1].instructions),
                 "n_harmful_the_suffix_was_optimized_on": sum(i in optimized for i in conditions[0].instructions)},
        "cosine_by_layer": {"layers": "residual stream entering each layer, last token", "mean": cosine, "sd": cosine_sd},
        "late_layers": {"layers": [late[0], late[-1]], "mean_cosine": {n: round(v, 4) for n, v in late_mean.items()},
                        "adversarial_closer_to": closer(ADVERSARIAL), "random_closer_to": closer(RANDOM)},
        "attribution": {"stream": "final residual stream (every head and MLP), last token",
                        "projection_mean": projection, "top_heads_total": top_total,
                        "max_abs_completeness_error": round(error, 5)},
        "top_heads": heads_out,
        "refusal_rate": rates,
        "refusal_rate_adversarial_on_optimized_prompts": _rate([g for g in adv_rows if g["instruction"] in optimized]),
        "refusal_rate_adversarial_on_held_out_prompts": _rate([g for g in adv_rows if g["instruction"] not in optimized]),
        "judge": args.judge,
        "n_replies": counts,
        "settings": {"n": args.n, "top_k": args.top_k, "max_new_tokens": args.max_new_tokens, "random_seed": args.random_seed},
        "figures": figures,
        "generations": "generations.jsonl",
        "resumed_stages": resumed,
        "timings_s": timings,
    }


def _rate(rows) -> float | None:
    return round(sum(r["refused"] for r in rows) / len(rows), 4) if rows else None


def format_summary(summary: dict) -> str:
    """The terminal summary of a ``summary.json``."""
    lines = [f"model {summary['model']}, refusal direction at layer {summary['direction_layer']}; "
             f"suffix {summary['suffix']['text']!r}"]
    late = summary["late_layers"]
    lines.append(f"{'condition':<24}{'refusal rate':>14}{'cosine, layers ' + str(late['layers'][0]) + '-' + str(late['layers'][1]):>26}"
                 f"{'top-head DFA':>15}")
    for name, rate in summary["refusal_rate"].items():
        lines.append(f"{name:<24}{rate:>14.2f}{late['mean_cosine'][name]:>26.3f}{summary['attribution']['top_heads_total'][name]:>15.2f}")
    lines.append(f"late-layer cosine: adversarial suffix closer to {late['adversarial_closer_to']}, "
                 f"random suffix closer to {late['random_closer_to']}")
    lines.append("top heads (attribution plain -> adversarial; attention on instruction / suffix, plain -> adversarial):")
    for head in summary["top_heads"]:
        a, s = head["attribution"], head["attention_share"]
        lines.append(f"  L{head['layer']}H{head['head']:<3} {a['harmful']:+.3f} -> {a['harmful+adv_suffix']:+.3f}   "
                     f"instruction {s['harmful']['instruction']:.2f} -> {s['harmful+adv_suffix']['instruction']:.2f}, "
                     f"suffix {s['harmful+random_suffix']['suffix']:.2f} (random) / {s['harmful+adv_suffix']['suffix']:.2f} (adversarial)")
    return "\n".join(lines)


def _write_index(out: Path, summary: dict) -> None:
    from mechref.io import atomic_path

    links = "".join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a></li>' for f in summary["figures"] if f.endswith(".html"))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Suffix attention hijacking: {html.escape(summary['model'])}</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1100px}} pre{{background:#f6f6f6;padding:12px;overflow-x:auto}}</style></head><body>
<h1>Suffix attention hijacking: {html.escape(summary['model'])}</h1>
<p>Refusal direction at layer {summary['direction_layer']}, position {summary['direction_position']}.
Adversarial suffix ({summary['suffix']['n_tokens']} tokens, {html.escape(summary['suffix']['source'])}):
<code>{html.escape(summary['suffix']['text'])}</code>. Random control: <code>{html.escape(summary['random_suffix']['text'])}</code>.</p>
<pre>{html.escape(format_summary(summary))}</pre>
<h2>Figures and attention views</h2><ul>{links}</ul>
<p>Numbers: <a href="summary.json">summary.json</a>; replies and verdicts: <a href="generations.jsonl">generations.jsonl</a>.</p>
</body></html>"""
    with atomic_path(out / "index.html") as tmp:
        Path(tmp).write_text(page, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
