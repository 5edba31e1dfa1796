"""The report of a category study: numbers with their counts and intervals, figures,
``summary.json`` and ``index.html``."""

from __future__ import annotations

from pathlib import Path

from mechref.analyses.categories import figures
from mechref.analyses.categories.geometry import angle_to_subspace, cluster_order
from mechref.analyses.categories.pipeline import BASELINE, GLOBAL, CategoriesResult, subspace_name
from mechref.framework.io import write_json, write_jsonl
from mechref.framework.ownership import claim_output_folder
from mechref.rates import Rate, mcnemar_exact, mean_interval
from mechref.report.pages import GLOSSARY, summary_header, write_index
from mechref.report.plotting import save_figure

# A category whose replies are still refused this often with the global direction ablated is one
# the single direction misses.
MISSED_ABOVE = 0.25


def _r(x: float) -> float:
    return round(float(x), 4)


def _transfer(result: CategoriesResult) -> dict:
    """Per source and target category: the share of evaluation prompts with refusal score > 0
    (k/n, Wilson interval) and the mean score (95% interval over prompts)."""
    names = result.names
    share: dict[str, dict[str, dict]] = {}
    score: dict[str, dict[str, dict]] = {}
    for s, source in enumerate(result.sources):
        share[source], score[source] = {}, {}
        for name in [*names, "all"]:
            cols = [i for i, c in enumerate(result.eval_categories) if name in ("all", c)]
            values = result.scores[s, cols]
            share[source][name] = Rate.of(bool(v > 0) for v in values).to_dict()
            score[source][name] = mean_interval(values.tolist())
    return {"refusing_share": share, "mean_refusal_score": score}


def _generation(result: CategoriesResult) -> dict:
    rows = result.generation
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    names = [n for n in result.names if any(r["category"] == n for r in rows)]
    by: dict[str, dict] = {}
    for condition in conditions:
        by[condition] = {
            name: Rate.of(r["refused"] for r in rows if r["condition"] == condition and r["category"] == name).to_dict()
            for name in names
        }
        by[condition]["all"] = Rate.of(r["refused"] for r in rows if r["condition"] == condition).to_dict()

    def verdicts(condition: str) -> list[bool]:
        return [r["refused"] for r in rows if r["condition"] == condition]

    paired = {
        condition: mcnemar_exact(verdicts(BASELINE), verdicts(condition)) for condition in conditions if condition != BASELINE
    }
    subspace = next((c for c in conditions if c.startswith("subspace_")), None)
    missed = [n for n in names if by[GLOBAL][n]["rate"] > MISSED_ABOVE] if GLOBAL in by else []
    out = {
        "conditions": conditions,
        "n_per_category": result.settings.n_generate,
        "max_new_tokens": result.settings.max_new_tokens,
        "judge": result.settings.judge,
        "refusal_rate": by,
        "mcnemar_against_baseline": paired,
        "missed_by_global_direction": {"threshold": MISSED_ABOVE, "categories": missed},
    }
    if subspace is not None and GLOBAL in by:
        # The question of the subspace: does ablating k directions remove refusal the single one leaves?
        out["subspace_against_global"] = {"subspace": subspace, **mcnemar_exact(verdicts(GLOBAL), verdicts(subspace))}
    return out


def _subspace(result: CategoriesResult, transfer: dict) -> dict:
    ratio = result.subspace.explained_variance_ratio.tolist()
    k_max = sum(1 for s in result.sources if s.startswith("subspace_"))
    curve = []
    for k in range(1, k_max + 1):
        s = result.kl_sources.index(subspace_name(k))
        curve.append(
            {
                "k": k,
                "refusing": transfer["refusing_share"][subspace_name(k)]["all"],
                "mean_refusal_score": transfer["mean_refusal_score"][subspace_name(k)]["all"],
                "kl": mean_interval(result.kl[s].tolist()),
                "angle_to_global_deg": round(angle_to_subspace(result.global_direction, result.subspace.top(k)), 2),
            }
        )
    g = result.kl_sources.index(GLOBAL)
    return {
        "built_from": "the category directions (uncentred SVD: the shared refusal component is the first component)",
        "explained_variance_ratio": [_r(x) for x in ratio],
        "k_ablation": curve,
        "global_ablation": {
            "refusing": transfer["refusing_share"][GLOBAL]["all"],
            "mean_refusal_score": transfer["mean_refusal_score"][GLOBAL]["all"],
            "kl": mean_interval(result.kl[g].tolist()),
        },
        "baseline": {"refusing": transfer["refusing_share"][BASELINE]["all"]},
    }


def summarize(result: CategoriesResult) -> dict:
    """The run as the plain dictionary written to ``summary.json``."""
    names = result.names
    cos = result.cosines()
    labels = [*names, GLOBAL]
    order = cluster_order(cos)
    transfer = _transfer(result)
    kl = {source: mean_interval(result.kl[s].tolist()) for s, source in enumerate(result.kl_sources)}
    return {
        **summary_header("categories", result.model),
        "direction": {
            "layer": result.layer,
            "position": result.position,
            "source": result.direction_source,
            "mismatches": result.direction_mismatches,
        },
        "data": result.data.describe(),
        "refusal_tokens": result.refusal_tokens,
        "cosine": {
            "names": labels,
            "matrix": [[_r(x) for x in row] for row in cos.tolist()],
            "cluster_order": [labels[i] for i in order],
            "with_global": {n: _r(float(cos[i, -1])) for i, n in enumerate(names)},
            "direction_norms": {n: round(float(result.directions[i].norm()), 3) for i, n in enumerate(names)},
        },
        "logit_transfer": {
            "what": "refusal score (log-odds of the refusal tokens at the first reply position) of each target category's "
            "evaluation prompts, with each source's direction ablated everywhere; share = score > 0",
            "sources": result.sources,
            "targets": names,
            **transfer,
        },
        "kl_by_source": kl,
        "subspace": _subspace(result, transfer),
        "generation": _generation(result),
        "settings": result.settings.to_dict(),
        "resumed_stages": result.resumed_stages,
        "timings_s": {**result.timings, "total": round(sum(result.timings.values()), 1)},
    }


def format_summary(summary: dict) -> str:
    """The summary as the lines the command prints."""
    names = summary["logit_transfer"]["targets"]
    t = summary["logit_transfer"]["refusing_share"]
    g = summary["generation"]
    lines = [
        f"model {summary['model']}; directions at layer {summary['direction']['layer']}, position "
        f"{summary['direction']['position']}; {summary['data']['source']}, {len(names)} categories "
        f"(at least {summary['data']['min_prompts_per_category']} prompts each; merged into 'other': "
        f"{', '.join(summary['data']['merged_into_other']) or 'none'})",
        f"{'category':<22}{'n fit/eval':>11}{'cos global':>11}{'logit: base':>12}{'global abl.':>12}{'own abl.':>10}"
        f"{'gen: base':>11}{'global abl.':>13}",
    ]
    rates = g["refusal_rate"]
    for name in names:
        d = summary["data"]["categories"][name]
        gen = (
            f"{rates[BASELINE][name]['k']:>5}/{rates[BASELINE][name]['n']:<5}"
            f"{rates[GLOBAL][name]['k']:>7}/{rates[GLOBAL][name]['n']:<5}"
            if name in rates.get(BASELINE, {})
            else ""
        )
        lines.append(
            f"{name:<22}{d['fit']:>6}/{d['eval']:<4}{summary['cosine']['with_global'][name]:>11.2f}"
            f"{t[BASELINE][name]['rate']:>12.2f}{t[GLOBAL][name]['rate']:>12.2f}{t[name][name]['rate']:>10.2f}  {gen}"
        )
    lines.append("(logit columns: share of evaluation prompts with refusal score > 0; gen: greedy replies judged refused, k/n)")
    for condition, rate in g["refusal_rate"].items():
        r = rate["all"]
        test = g["mcnemar_against_baseline"].get(condition)
        lines.append(
            f"replies, {condition:<20} refused {r['k']}/{r['n']} = {r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
            + (f"   McNemar vs baseline p = {test['p_value']:.3g}" if test else "")
        )
    missed = g["missed_by_global_direction"]
    lines.append(
        f"categories still refused > {missed['threshold']:.0%} with the global direction ablated: "
        + (", ".join(missed["categories"]) or "none")
    )
    s = summary["subspace"]
    lines.append(
        "explained variance of the category directions: " + ", ".join(f"{x:.2f}" for x in s["explained_variance_ratio"][:6])
    )
    single = s["global_ablation"]
    lines.append(
        f"single global direction ablated: {single['refusing']['k']}/{single['refusing']['n']} still refusing (logit), "
        f"KL {single['kl']['mean']:.4f}"
    )
    for row in s["k_ablation"]:
        lines.append(
            f"top-{row['k']} subspace ablated: {row['refusing']['k']}/{row['refusing']['n']} still refusing (logit), "
            f"KL {row['kl']['mean']:.4f}, angle to the global direction {row['angle_to_global_deg']:.1f}°"
        )
    if "subspace_against_global" in g:
        c = g["subspace_against_global"]
        lines.append(
            f"replies, {c['subspace']} against the global direction: {c['changed_to_false']} fewer refusals, "
            f"{c['changed_to_true']} more (McNemar p = {c['p_value']:.3g})"
        )
    return "\n".join(lines)


CAPTIONS = {
    "cosine_matrix": "How parallel the categories' refusal directions are to each other and to the global direction.",
    "transfer_logit": "Ablate one category's direction (rows), measure refusal of every category's held-out prompts "
    "(columns) by the logit score: a row that clears every column is a shared direction.",
    "transfer_generation": "The same transfer, read from greedy replies on a sample: baseline, the global direction, the "
    "subspace and the largest categories' own directions.",
    "category_rates": "Which categories the single direction misses: replies at baseline and under each ablation.",
    "subspace": "Explained variance of the category directions, and refusal and KL as the top-k subspace is ablated.",
}

GLOSSARY_CATEGORIES = (
    *GLOSSARY,
    ("fit / eval prompts", "each category's prompts are halved: one half makes its direction, the other measures it"),
    ("other", "categories with fewer prompts than the minimum, merged into one group"),
    ("top-k subspace", "the span of the first k principal components of the category directions, all ablated at once"),
)


def draw(result: CategoriesResult, summary: dict) -> dict:
    """Every figure of a study, by file stem (for a notebook: ``draw(result, summarize(result))["subspace"]``)."""
    names = result.names
    order = summary["cosine"]["cluster_order"]
    index = [summary["cosine"]["names"].index(n) for n in order]
    matrix = [[summary["cosine"]["matrix"][i][j] for j in index] for i in index]
    t = summary["logit_transfer"]["refusing_share"]
    g = summary["generation"]
    return {
        "cosine_matrix": figures.cosine_heatmap(matrix, order, result.layer),
        "transfer_logit": figures.transfer_heatmap(
            [[t[s][n] for n in names] for s in result.sources],
            result.sources,
            names,
            "Cross-category transfer by the logit score<br><sup>share of each category's held-out prompts still "
            "refusing (score > 0) with the row's direction ablated</sup>",
        ),
        "transfer_generation": figures.transfer_heatmap(
            [[g["refusal_rate"][c][n] for n in names] for c in g["conditions"]],
            g["conditions"],
            names,
            f"Cross-category transfer by generation<br><sup>{g['n_per_category']} held-out prompts per category, greedy "
            f"replies ({g['max_new_tokens']} tokens) judged by {g['judge']}</sup>",
        ),
        "category_rates": figures.category_rates(
            g["refusal_rate"], [c for c in g["conditions"] if c in (BASELINE, GLOBAL) or c.startswith("subspace_")], names
        ),
        "subspace": figures.subspace_figure(summary["subspace"]),
    }


def report_categories(result: CategoriesResult, out: str | Path, *, echo: bool = True) -> dict:
    """Print the table; write ``summary.json``, the figures and ``index.html`` into ``out``."""
    out = claim_output_folder(out)
    summary = summarize(result)
    written = []
    for stem, fig in draw(result, summary).items():
        written += [p.name for p in save_figure(fig, out / stem, static=result.settings.static)]
    summary["figures"] = written
    write_json(out / "summary.json", summary)
    write_jsonl(out / "replies_judged.jsonl", result.generation)
    text = format_summary(summary)
    page = write_index(
        out,
        f"Refusal per harm category: {summary['model']}",
        "<p>One refusal direction per harm category, how parallel they are, how far ablating one removes refusal of "
        "the others, and whether a subspace of them removes refusal the single direction misses.</p>",
        text,
        written,
        [
            ("summary.json", "every number of this run"),
            ("replies_judged.jsonl", "the greedy replies under each condition, with the judge's verdicts"),
            (
                "logit_scores.safetensors",
                "refusal score of every evaluation prompt and KL of every harmless prompt, per ablation",
            ),
        ],
        CAPTIONS,
        GLOSSARY_CATEGORIES,
    )
    if echo:
        print(text)
        print(f"report in {page}")
    return summary
