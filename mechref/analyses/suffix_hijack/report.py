"""The report of a suffix-hijack run: figures, circuitsvis views, ``generations.jsonl``,
``summary.json`` and ``index.html``, drawn from a :class:`~mechref.analyses.suffix_hijack.pipeline.SuffixHijackResult`."""

from __future__ import annotations

import html
import time
from pathlib import Path

from mechref.analyses.suffix_hijack import figures
from mechref.analyses.suffix_hijack.conditions import ADVERSARIAL, HARMFUL, HARMLESS, RANDOM
from mechref.analyses.suffix_hijack.pipeline import SuffixHijackResult
from mechref.analyses.suffix_hijack.regions import REGIONS
from mechref.analyses.suffix_hijack.views import attention_page, write_page
from mechref.framework.io import write_json, write_jsonl
from mechref.framework.ownership import claim_output_folder
from mechref.judges.degenerate import category_counts
from mechref.rates import format_paired, paired_test, rate_or_none
from mechref.report.pages import summary_header, write_index
from mechref.report.plotting import rate_bars, save_figure

# The attention-share figure and summary show a head when the adversarial suffix moves its shares
# by at least this much (total variation) from both the plain prompts and the random control.
MIN_SHIFT = 0.2


def draw(result: SuffixHijackResult, out: Path) -> list[str]:
    """Write every figure and attention view into ``out``; the file names written."""
    names = [c.name for c in result.conditions]
    m = result.measures
    rates = result.rates()
    written = []
    for fig, stem in [
        (figures.cosine_by_layer({n: m[n].cosine for n in names}, result.direction_layer), "cosine_by_layer"),
        (figures.head_attribution_heatmaps({n: m[n].heads for n in names}, result.top_heads), "head_attribution"),
        (
            figures.top_head_attribution({n: m[n].heads for n in names}, {n: m[n].mlp for n in names}, result.top_heads),
            "top_head_attribution",
        ),
        (
            figures.attention_share_bars({n: m[n].shares for n in names}, result.top_heads, min_shift=MIN_SHIFT),
            "attention_shares",
        ),
        (rate_bars(rates), "refusal_rate"),
    ]:
        written += [p.name for p in save_figure(fig, out / stem, static=result.settings.static)]
    head_names = [f"L{layer}H{head}" for layer, head in result.top_heads]
    for view in result.views:
        page = attention_page(
            f"Top refusal-writing heads: {view.condition}",
            view.tokens,
            view.patterns,
            head_names,
            view.regions,
            note=f"Instruction: {view.instruction!r}; suffix: {view.suffix!r}. Heads ranked by direct "
            "feature attribution to the refusal direction on the plain harmful prompts.",
        )
        written.append(write_page(out / f"attention_{view.condition.replace('+', '_')}.html", page).name)
    return written


def closer_to(cosine: dict[str, list[float]], name: str, layers: list[int]) -> str:
    """``"harmless"`` or ``"harmful"``: whose per-layer cosine curve ``name``'s curve is nearer to
    (summed absolute difference over ``layers``).

    >>> closer_to({"harmful": [0.9, 0.8], "harmless": [0.1, 0.0], "x": [0.2, 0.1]}, "x", [0, 1])
    'harmless'
    """
    to_harmless = sum(abs(cosine[name][layer] - cosine[HARMLESS][layer]) for layer in layers)
    to_harmful = sum(abs(cosine[name][layer] - cosine[HARMFUL][layer]) for layer in layers)
    return "harmless" if to_harmless < to_harmful else "harmful"


def summarize(result: SuffixHijackResult, written: list[str] | None = None) -> dict:
    """The numbers of a run, as written to ``summary.json``."""
    names = [c.name for c in result.conditions]
    m = result.measures
    cosine = {n: [round(float(v), 4) for v in m[n].cosine.double().mean(0)] for n in names}
    cosine_sd = (
        {n: [round(float(v), 4) for v in m[n].cosine.double().std(0)] for n in names}
        if len(result.conditions[0].instructions) > 1
        else None
    )
    late = list(range(result.n_layers // 2, result.n_layers))
    late_mean = {n: sum(cosine[n][layer] for layer in late) / len(late) for n in names}

    heads_out = []
    shift = {
        "adversarial_vs_plain": figures.share_shift(m[ADVERSARIAL].shares, m[HARMFUL].shares),
        "random_vs_plain": figures.share_shift(m[RANDOM].shares, m[HARMFUL].shares),
        "adversarial_vs_random": figures.share_shift(m[ADVERSARIAL].shares, m[RANDOM].shares),
    }
    for i, (layer, head) in enumerate(result.top_heads):
        heads_out.append(
            {
                "layer": layer,
                "head": head,
                "attribution": {n: round(float(m[n].heads[:, layer, head].mean()), 4) for n in names},
                "attention_share": {
                    n: {r: round(float(m[n].shares[:, i, j].mean()), 4) for j, r in enumerate(REGIONS)} for n in names
                },
                "attention_shift": {pair: round(float(values[i]), 4) for pair, values in shift.items()},
            }
        )
    rates = result.rates()
    optimized = set(result.suffix.provenance.get("prompts", []))
    adversarial = [g for g in result.generations if g["condition"] == ADVERSARIAL]
    on_optimized = rate_or_none(g["refused"] for g in adversarial if g["instruction"] in optimized)
    held_out = rate_or_none(g["refused"] for g in adversarial if g["instruction"] not in optimized)
    held_out_rows = [g for g in result.generations if g["instruction"] not in optimized]
    # The same instructions under two conditions: exact McNemar tests, on every prompt and on the
    # prompts the suffix was not optimized on.
    pairs = ((HARMFUL, ADVERSARIAL), (RANDOM, ADVERSARIAL))
    paired = {
        "all_prompts": [paired_test(result.generations, "condition", "instruction", "refused", a, b) for a, b in pairs],
        "held_out_prompts": [paired_test(held_out_rows, "condition", "instruction", "refused", a, b) for a, b in pairs]
        if held_out
        else None,
    }
    top_total = {n: round(float(sum(m[n].heads[:, layer, head].mean() for layer, head in result.top_heads)), 4) for n in names}
    return {
        **summary_header("suffix_hijack", result.model),
        "direction_layer": result.direction_layer,
        "direction_position": result.direction_position,
        "direction_source": result.direction_source,
        "direction_mismatches": result.direction_mismatches,
        "suffix": {**result.suffix.to_dict(), "n_tokens": result.n_suffix_tokens},
        "random_suffix": result.random_suffix.to_dict(),
        "data": {
            "harmful": result.harmful_source,
            "harmless": result.harmless_source,
            "n_harmful": len(result.conditions[0].instructions),
            "n_harmless": len(result.conditions[-1].instructions),
            "n_harmful_the_suffix_was_optimized_on": sum(i in optimized for i in result.conditions[0].instructions),
        },
        "cosine_by_layer": {"layers": "residual stream entering each layer, last token", "mean": cosine, "sd": cosine_sd},
        "late_layers": {
            "layers": [late[0], late[-1]],
            "mean_cosine": {n: round(v, 4) for n, v in late_mean.items()},
            "adversarial_closer_to": closer_to(cosine, ADVERSARIAL, late),
            "random_closer_to": closer_to(cosine, RANDOM, late),
        },
        "attribution": {
            "stream": "final residual stream (every head and MLP), last token",
            "projection_mean": {n: round(float(m[n].projection.mean()), 4) for n in names},
            "top_heads_total": top_total,
            "max_abs_completeness_error": round(max(m[n].completeness_error for n in names), 5),
            # The gap allowed: 1e-3 plus the rounding of the model's dtype (mechref.attribution.rounding_allowance).
            "max_allowed_completeness_error": round(max(float(m[n].allowed_error.max()) for n in names), 5),
            "complete": all(m[n].complete for n in names),
        },
        "top_heads": heads_out,
        "attention_shift": {
            "measure": "total variation distance between mean region shares (0 same, 1 disjoint)",
            "min_shift": MIN_SHIFT,
            # From the unrounded shifts, as the figure chooses its heads.
            "heads_moved_by_the_adversarial_suffix": [
                f"L{layer}H{head}"
                for i, (layer, head) in enumerate(result.top_heads)
                if min(float(shift["adversarial_vs_plain"][i]), float(shift["adversarial_vs_random"][i])) >= MIN_SHIFT
            ],
        },
        "refusal_rate": {n: r.value for n, r in rates.items()},
        "refusal_rate_counts": {n: r.to_dict() for n, r in rates.items()},
        # Refusals as judged; among the rest, replies stuck in a repetition loop are not compliance.
        "reply_categories": {
            n: category_counts(
                [g["refused"] for g in result.generations if g["condition"] == n],
                [g["reply"] for g in result.generations if g["condition"] == n],
            )
            for n in rates
        },
        "refusal_rate_adversarial_on_optimized_prompts": round(on_optimized.value, 4) if on_optimized else None,
        "refusal_rate_adversarial_on_held_out_prompts": round(held_out.value, 4) if held_out else None,
        "refusal_rate_counts_adversarial": {
            "optimized_prompts": on_optimized.to_dict() if on_optimized else None,
            "held_out_prompts": held_out.to_dict() if held_out else None,
        },
        "paired_tests": paired,
        "judge": result.settings.judge,
        "n_replies": {n: r.n for n, r in rates.items()},
        "settings": result.settings.to_dict(),
        "figures": written or [],
        "generations": "generations.jsonl",
        "resumed_stages": result.resumed_stages,
        "timings_s": result.timings,
    }


def format_summary(summary: dict) -> str:
    """The terminal summary of a ``summary.json``."""
    lines = [
        f"model {summary['model']}, refusal direction at layer {summary['direction_layer']}; suffix {summary['suffix']['text']!r}"
    ]
    late = summary["late_layers"]
    lines.append(
        f"{'condition':<24}{'refusal rate':>14}{'cosine, layers ' + str(late['layers'][0]) + '-' + str(late['layers'][1]):>26}"
        f"{'top-head DFA':>15}"
    )
    for name, rate in summary["refusal_rate"].items():
        counts = summary.get("refusal_rate_counts", {}).get(name)
        shown = f"{rate:.2f} ({counts['k']}/{counts['n']})" if counts else f"{rate:.2f}"
        lines.append(
            f"{name:<24}{shown:>14}{late['mean_cosine'][name]:>26.3f}{summary['attribution']['top_heads_total'][name]:>15.2f}"
        )
    lines.append(
        f"late-layer cosine: adversarial suffix closer to {late['adversarial_closer_to']}, "
        f"random suffix closer to {late['random_closer_to']}"
    )
    counts = summary.get("refusal_rate_counts_adversarial", {})
    for part, label in (("held_out_prompts", "not optimized on"), ("optimized_prompts", "the suffix was optimized on")):
        if counts.get(part):
            c = counts[part]
            lines.append(
                f"with the adversarial suffix, prompts {label}: refusal {c['rate']:.2f} ({c['k']}/{c['n']}, "
                f"95% CI {c['ci95'][0]:.2f}-{c['ci95'][1]:.2f})"
            )
    for scope, tests in (summary.get("paired_tests") or {}).items():
        for test in tests or []:
            lines.append(f"{scope.replace('_', ' ')}: {format_paired(test)}")
    lines.append("top heads (attribution plain -> adversarial; attention on instruction / suffix, plain -> adversarial):")
    for head in summary["top_heads"]:
        a, s = head["attribution"], head["attention_share"]
        lines.append(
            f"  L{head['layer']}H{head['head']:<3} {a[HARMFUL]:+.3f} -> {a[ADVERSARIAL]:+.3f}   "
            f"instruction {s[HARMFUL]['instruction']:.2f} -> {s[ADVERSARIAL]['instruction']:.2f}, "
            f"suffix {s[RANDOM]['suffix']:.2f} (random) / {s[ADVERSARIAL]['suffix']:.2f} (adversarial)"
        )
    return "\n".join(lines)


def captions(summary: dict) -> dict[str, str]:
    """One sentence per figure saying what it shows for this run."""
    late = summary["late_layers"]
    layers = f"layers {late['layers'][0]}-{late['layers'][1]}"
    moved = summary["attention_shift"]["heads_moved_by_the_adversarial_suffix"]
    found = {
        "cosine_by_layer": (
            f"At {layers} the adversarial suffix's alignment with the refusal direction is closer to the "
            f"{late['adversarial_closer_to']} prompts', the random suffix's to the {late['random_closer_to']} prompts'."
        ),
        "head_attribution": (
            "How much each attention head writes along the refusal direction (DFA), per condition; the bottom row "
            "is what each suffix changes, the random one as the control."
        ),
        "top_head_attribution": "The heads that write the refusal direction most on plain harmful prompts, in every condition.",
        "attention_shares": (
            f"The adversarial suffix moves the attention of {len(moved)} of the {len(summary['top_heads'])} top heads "
            f"by at least {MIN_SHIFT:g} from both the plain prompts and the random control"
            + (f" ({', '.join(moved)})" if moved else "")
            + "; their shares of attention per region are drawn."
        ),
        "refusal_rate": "Share of greedy replies judged refusals per condition, with k/n and 95% intervals.",
    }
    for condition in summary["refusal_rate"]:
        found[f"attention_{condition.replace('+', '_')}"] = f"The top heads' attention patterns on one {condition} prompt."
    return found


def report_suffix_hijack(result: SuffixHijackResult, out: str | Path, *, echo: bool = True) -> dict:
    """Write the figures, views, ``generations.jsonl``, ``summary.json`` and ``index.html`` of ``result`` into ``out``."""
    out = claim_output_folder(out)  # refuses a folder of files mechref did not write
    started = time.perf_counter()
    if echo:
        print("      drawing figures and attention views …", flush=True)
    written = draw(result, out)
    write_jsonl(out / "generations.jsonl", result.generations)
    result.timings["figures"] = round(time.perf_counter() - started, 2)
    summary = summarize(result, written)
    write_json(out / "summary.json", summary)
    intro = (
        f"<p>Refusal direction at layer {summary['direction_layer']}, position {summary['direction_position']}. "
        f"Adversarial suffix ({summary['suffix']['n_tokens']} tokens, {html.escape(summary['suffix']['source'])}): "
        f"<code>{html.escape(summary['suffix']['text'])}</code>. Random control: "
        f"<code>{html.escape(summary['random_suffix']['text'])}</code>.</p>"
    )
    write_index(
        out,
        f"Suffix attention hijacking: {summary['model']}",
        intro,
        format_summary(summary),
        written,
        [("summary.json", "every number of this run"), ("generations.jsonl", "replies and verdicts")],
        captions(summary),
    )
    if echo:
        print(format_summary(summary))
        print(f"report in {out / 'index.html'}")
    return summary
