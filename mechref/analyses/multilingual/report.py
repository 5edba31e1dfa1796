"""The report of a multilingual study: each section turns a part of a
:class:`~mechref.analyses.multilingual.pipeline.MultilingualResult` into numbers and figures.

Every section returns ``(summary_part, {figure_stem: figure})``; :func:`report_multilingual` saves
the figures and merges the parts into ``summary.json`` (so commands run on the same ``--out`` add
to one report).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mechref.analyses.multilingual import figures
from mechref.analyses.multilingual.metrics import cosine_matrix_by_layer, mean_off_diagonal, pca_projection, silhouette_by_layer
from mechref.analyses.multilingual.pipeline import MultilingualResult
from mechref.analyses.multilingual.settings import NEEDS_HARMLESS
from mechref.framework.io import read_json, write_json
from mechref.framework.ownership import claim_output_folder
from mechref.report.pages import summary_header, write_index
from mechref.report.plotting import save_figure


def _num(x) -> float | None:
    """A JSON-safe number: NaN (undefined, e.g. a zero vector) becomes None."""
    x = float(x)
    return None if x != x else round(x, 4)


def _round(matrix) -> list:
    return [[_num(x) for x in row] for row in matrix]


def cosine_section(result: MultilingualResult) -> tuple[dict, dict]:
    """The cosine part of the summary and its figures."""
    vectors = result.vectors()  # [lang, layer, d]
    by_layer = cosine_matrix_by_layer(vectors)
    at_layer = by_layer[result.layer]
    part = {
        "cosine": {
            "layer": result.layer,
            "languages": result.languages,
            "matrix": _round(at_layer),
            "mean_pairwise": _num(mean_off_diagonal(at_layer)),
            "mean_pairwise_by_layer": [_num(x) for x in mean_off_diagonal(by_layer)],
            "vector_norms": {l: round(float(vectors[i, result.layer].norm()), 3) for i, l in enumerate(result.languages)},
        }
    }
    return part, {
        "cosine_matrix": figures.cosine_heatmap(at_layer, result.languages, result.layer),
        "cosine_by_layer": figures.cosine_trend(by_layer, result.languages, result.layer),
    }


def silhouette_section(result: MultilingualResult) -> tuple[dict, dict]:
    """The silhouette and PCA part of the summary and its figures."""
    acts, audit = result.activations, result.audit

    def both(a: dict, label: str) -> torch.Tensor:
        return torch.cat([a[f"{label}_train"], a[f"{label}_test"]])

    scores = torch.stack([silhouette_by_layer(both(acts[l], "harmful"), both(acts[l], "harmless")) for l in result.languages])
    # PCA fitted jointly on every language's prompts, so the panels share axes.
    layer = result.layer
    pooled = torch.cat([torch.cat([both(acts[l], "harmful"), both(acts[l], "harmless")])[:, layer] for l in result.languages])
    _, ratio = pca_projection(pooled)
    coords = {}
    for language in result.languages:
        a = acts[language]
        harmful, _ = pca_projection(pooled, both(a, "harmful")[:, layer])
        harmless, _ = pca_projection(pooled, both(a, "harmless")[:, layer])
        entry = {"harmful": harmful, "harmless": harmless}
        if audit is not None:
            complied = [not refused for refused in audit.refused(language, "harmful")]
            n_train = len(a["harmful_train"])
            mask = torch.tensor(complied, dtype=torch.bool)
            entry["jailbroken"] = harmful[n_train:][mask] if mask.any() else harmful[:0]
        coords[language] = entry
    part = {
        "silhouette": {
            "metric": "euclidean",
            "layers": "residual stream entering each layer",
            "by_layer": {l: [round(float(x), 4) for x in scores[i]] for i, l in enumerate(result.languages)},
            "at_direction_layer": {l: round(float(scores[i, layer]), 4) for i, l in enumerate(result.languages)},
        },
        "pca": {
            "layer": layer,
            "fit": "jointly on every language's harmful and harmless prompts",
            "explained_variance_ratio": [round(float(x), 4) for x in ratio],
            "jailbroken_highlighted": audit is not None,
        },
    }
    figs = {
        "silhouette_by_layer": figures.silhouette_lines(scores, result.languages, layer),
        "silhouette_at_layer": figures.silhouette_bars(scores, result.languages, layer),
        "pca": figures.pca_panels(coords, result.languages, ratio, layer, "fitted jointly on all languages"),
    }
    return part, figs


def audit_section(result: MultilingualResult) -> tuple[dict, dict]:
    """The audit part of the summary (each language's refusal rates and judge status) and its figures."""
    audit = result.audit
    assert audit is not None
    status = {l: r["status"] for l, r in audit.rates.items()}
    part = {
        "baseline_refusal": audit.rates,
        "audit_status": status,
        "not_safety_aligned": [l for l, s in status.items() if s == "not safety-aligned"],
        # Refusing harmless prompts as often as harmful ones is not safety: the model may not understand the language.
        "refuses_most_harmless_prompts": [l for l, s in status.items() if s.startswith("over-refusing")],
        "judge_not_validated": [l for l, s in status.items() if s == "judge not validated"],
        "refusal_tokens": {language: tokens.to_dict() for language, tokens in audit.refusal_tokens.items()},
        # Languages whose logit refusal score reads tokens that open their harmless replies too:
        # their columns of the transfer matrices measure nothing.
        "logit_score_unreliable": [l for l, tokens in audit.refusal_tokens.items() if not tokens.reliable],
    }
    return part, {"baseline_refusal": figures.audit_bars(audit.rates)}


def transfer_section(result: MultilingualResult) -> tuple[dict, dict]:
    """The transfer part of the summary (ablation and addition matrices) and its figures."""
    transfer = result.transfer
    assert transfer is not None
    figs = {}
    for mode in [m for m in ("ablation", "addition") if m in transfer]:  # harmful prompts only: no addition
        t = transfer[mode]
        unreliable = [l for l, tokens in result.audit.refusal_tokens.items() if not tokens.reliable] if result.audit else []
        figs[f"transfer_{mode}"] = figures.transfer_heatmap(
            t["refusing_share"], t["sources"], t["targets"], mode, result.layer, unreliable=unreliable
        )
    part = {
        "transfer": {
            "measure": "logit refusal score with each target's refusal tokens; refusing_share = share of prompts "
            "with score > 0; row 'baseline' = no intervention",
            **{mode: transfer[mode] for mode in ("ablation", "addition") if mode in transfer},
            "generation": transfer["generation"],
        }
    }
    if "addition" in transfer["generation"]:
        figs["addition_check"] = figures.addition_check(transfer["generation"]["addition"])
    return part, figs


def _data_source(result: MultilingualResult) -> str:
    sources = sorted({s.source for s in result.sets.values()})
    if all(source.startswith("polyrefuse:") for source in sources):
        return f"PolyRefuse at {result.settings.data}"
    return "; ".join(sources)  # the user's own files: table:PATH or folder:PATH


def summary_base(result: MultilingualResult) -> dict:
    """What every summary of the analysis holds, whatever parts ran: model, languages, settings, data, judges."""
    settings = result.settings
    return {
        **summary_header("multilingual", result.model),
        "languages": result.languages,
        "direction_layer": result.layer,
        "direction_position": result.position,
        "direction_source": result.direction_source,
        "direction_mismatches": result.direction_mismatches,
        "data": {
            "source": "bundled multilingual set" if settings.data is None else _data_source(result),
            # Same index, same source prompt in every language (a table, PolyRefuse, the bundled set); a folder
            # per language is not known to be: the transfer's paired reading then compares different prompts.
            "aligned": all(s.aligned for s in result.sets.values()),
            "n_train_per_class": settings.n_train,
            "n_test_per_class": settings.n_test,
            "reduced_sample_note": f"{settings.n_train} train and {settings.n_test} test prompts per class and language",
            "notes": {lang: s.notes for lang, s in result.sets.items() if s.notes},
        },
        # Per language: tokens per character and unknown tokens of its prompts; poorly tokenized ones flagged.
        "tokenization": result.tokenization,
        "poorly_tokenized": [lang for lang, t in result.tokenization.items() if t["poorly_tokenized"]],
        # --harmful-only: the parts that need harmless prompts, and why each was left out.
        **(
            {"harmful_only": {"not_run": {p: NEEDS_HARMLESS[p] for p in settings.parts if p in NEEDS_HARMLESS}}}
            if settings.harmful_only
            else {}
        ),
        "judge": settings.judge,
        # With --judge auto: each language's phrase list or probe (the better passing check), else its mined openings.
        "judge_by_language": result.judge_by_language,
        "judged_with_english_phrases_only": [
            lang for lang in result.unjudgeable if result.judge_by_language.get(lang) == "substring"
        ],
        # The mined judge's phrases per language, with how many mined harmful / harmless replies each opened.
        **({"mined_judges": result.mined_judges} if result.mined_judges else {}),
        # Per language: the hand-labelled check of its judge (status validated / below the bar / no labelled check).
        **({"judge_validation": result.judge_validation} if result.judge_validation else {}),
        "settings": settings.to_dict(),
        "resumed_stages": result.resumed_stages,
    }


CAPTIONS = {
    "baseline_refusal": "How often the model refuses harmful and harmless prompts in each language (the audit).",
    "addition_check": "The addition matrix's logit proxy checked by generation: harmless prompts refused with one vector added.",
    "cosine_matrix": "Cosine similarity of the per-language refusal vectors at the analysis layer: near 1 means parallel.",
    "cosine_by_layer": "Mean cosine between languages' refusal vectors at every layer.",
    "transfer_ablation": "Share of each target language's harmful prompts still refused with a source language's vector ablated.",
    "transfer_addition": "Share of each target language's harmless prompts refused with a source language's vector added.",
    "silhouette_by_layer": "How well harmful and harmless prompts separate in each language, layer by layer.",
    "silhouette_at_layer": "The same separation at the analysis layer.",
    "pca": "Harmful and harmless prompts of every language on the first two principal components.",
}


def repair_section(result: MultilingualResult) -> tuple[dict, dict]:
    """The repair part of the summary: per weak language and coefficient, refusal of its harmful and
    harmless prompts with the source's vector added, each paired with the audit (no figure)."""
    repair = result.repair
    assert repair is not None
    kept = {k: v for k, v in repair.items() if k != "replies"}  # the replies stay in repair.json
    return {"repair": kept}, {}


SECTIONS = {
    "audit": audit_section,
    "cosine": cosine_section,
    "transfer": transfer_section,
    "silhouette": silhouette_section,
    "repair": repair_section,
}


def report_multilingual(result: MultilingualResult, out: str | Path, *, command: str = "multilingual", echo: bool = True) -> dict:
    """Write the figures of every part of ``result`` and merge its numbers into ``out/summary.json``
    (kept from earlier commands on the same folder when model and languages match) and ``index.html``."""
    out = claim_output_folder(out)  # refuses a folder of files mechref did not write
    parts, figs = [], {}
    for name in result.parts:
        part, drawn = SECTIONS[name](result)
        parts.append(part)
        figs.update(drawn)
    written = []
    for stem, fig in figs.items():
        written += [p.name for p in save_figure(fig, out / stem, static=result.settings.static)]
    path = out / "summary.json"
    summary = read_json(path) if path.is_file() else {}
    if summary.get("model") != result.model["model"] or summary.get("languages") != result.languages:
        summary = {}
    summary.update(summary_base(result))
    for part in parts:
        summary.update(part)
    if "baseline_refusal" in summary:
        summary["where_refusal_breaks"] = where_refusal_breaks(summary)
    summary["figures"] = sorted(set(summary.get("figures", [])) | set(written))
    summary.setdefault("timings_s", {})[command] = {**result.timings, "total": round(sum(result.timings.values()), 1)}
    write_json(path, summary)
    text = format_summary(summary)
    write_index(
        out,
        f"Refusal across languages: {summary['model']}",
        "<p>Per-language refusal vectors (Wang et al. 2025).</p>",
        text,
        summary["figures"],
        [("summary.json", "every number of this study")],
        CAPTIONS,
    )
    if echo:
        print(text)
        print(f"report in {out / 'index.html'}")
    return summary


def where_refusal_breaks(summary: dict) -> list[dict]:
    """Every audited language, weakest first: its harmful prompts refused (lowest first), its harmless
    prompts refused and the harmful-harmless separation (silhouette at the direction layer, where measured;
    lower separates less), each with the counts behind it.

    >>> rates = {"de": {"harmful": 0.5, "harmless": 0.0}, "ja": {"harmful": 0.25, "harmless": 0.125},
    ...          "fr": {"harmful": 0.5, "harmless": None}}
    >>> s = {"baseline_refusal": rates, "silhouette": {"at_direction_layer": {"de": 0.3, "ja": 0.2, "fr": 0.1}}}
    >>> [(r["language"], r["harmful_refused"], r["silhouette"]) for r in where_refusal_breaks(s)]
    [('ja', 0.25, 0.2), ('fr', 0.5, 0.1), ('de', 0.5, 0.3)]
    """
    rates = summary["baseline_refusal"]
    separation = summary.get("silhouette", {}).get("at_direction_layer", {})
    rows = [
        {
            "language": lang,
            "harmful_refused": r["harmful"],
            "harmless_refused": r["harmless"],
            "silhouette": separation.get(lang),
            "harmful_counts": r.get("harmful_counts"),
            "harmless_counts": r.get("harmless_counts"),
        }
        for lang, r in rates.items()
    ]
    # Ties in refusal broken by the separation (less separated: weaker), then by name (stable output).
    inf = float("inf")
    return sorted(rows, key=lambda r: (r["harmful_refused"], inf if r["silhouette"] is None else r["silhouette"], r["language"]))


def _cell(x: float | None) -> str:
    """A rate in the printed table; ``–`` where there is none (no harmless prompts)."""
    return f"{'–':>7}" if x is None else f"{x:>7.2f}"


def format_summary(summary: dict) -> str:
    """The summary as the lines the command prints."""
    languages = summary["languages"]
    if summary.get("where_refusal_breaks"):
        # Columns weakest first (least harmful refusal), so the languages where refusal breaks lead.
        languages = [r["language"] for r in summary["where_refusal_breaks"]]
    lines = [
        f"model {summary['model']}, refusal direction layer {summary['direction_layer']}; {summary['data']['source']} "
        f"({summary['data']['reduced_sample_note']})"
    ]
    head = f"{'language':<22}" + "".join(f"{l:>7}" for l in languages)
    lines.append(head)
    if "baseline_refusal" in summary:
        b = summary["baseline_refusal"]
        lines.append(f"{'harmful refused':<22}" + "".join(f"{b[l]['harmful']:>7.2f}" for l in languages))
        lines.append(f"{'harmless refused':<22}" + "".join(_cell(b[l]["harmless"]) for l in languages))
    if "transfer" in summary:
        g = summary["transfer"]["generation"]
        ablated = "refused, ablated" if g["source"] == "direction" else f"refused, {g['source']} ablated"
        lines.append(f"{ablated:<22}" + "".join(f"{g['ablated_refusal_rate'][l]:>7.2f}" for l in languages))
        if "addition" in g:
            a = g["addition"]
            lines.append(
                f"{'harmless, ' + a['source'] + ' added':<22}"
                + "".join(f"{a['refusal_rate_by_generation'][l]['rate']:>7.2f}" for l in languages)
                + "   (greedy replies)"
            )
            lines.append(f"{'  logit proxy':<22}" + "".join(f"{a['refusing_share_by_logit_score'][l]:>7.2f}" for l in languages))
    if "cosine" in summary:
        c = summary["cosine"]
        ref = "en" if "en" in languages else languages[0]
        r = languages.index(ref)
        lines.append(f"{'cosine with ' + ref:<22}" + "".join(f"{c['matrix'][r][i]:>7.2f}" for i in range(len(languages))))
    if "silhouette" in summary:
        s = summary["silhouette"]["at_direction_layer"]
        lines.append(f"{'silhouette':<22}" + "".join(f"{s[l]:>7.2f}" for l in languages))
    if "harmful_only" in summary:
        lines.append(
            "harmful prompts only (--harmful-only): no refusal vector per language; the refusal direction is ablated; "
            "not run: " + "; ".join(f"{p} ({why})" for p, why in summary["harmful_only"]["not_run"].items())
        )
    if summary.get("not_safety_aligned") is not None:
        flagged = summary["not_safety_aligned"]
        lines.append("not safety-aligned (harmful compliance > 10%): " + (", ".join(flagged) if flagged else "none"))
        if summary.get("refuses_most_harmless_prompts"):
            lines.append(
                "over-refusing, refuses most harmless prompts too (> 50%; not understood?), never called safety-aligned: "
                + ", ".join(summary["refuses_most_harmless_prompts"])
            )
        if summary.get("judge_by_language"):
            judges = summary["judge_by_language"]
            lines.append("judged by: " + ", ".join(f"{lang} {judges[lang]}" for lang in summary["languages"] if lang in judges))
        if summary.get("judge_not_validated"):
            lines.append(
                "judge not validated (no judge reads these replies, or the one that does has no passing hand-labelled "
                "check for this model; their rates are not measurements): " + ", ".join(summary["judge_not_validated"])
            )
    if "cosine" in summary:
        lines.append(
            f"mean pairwise cosine of the refusal vectors at layer {summary['cosine']['layer']}: "
            f"{summary['cosine']['mean_pairwise']:.3f}"
        )
    if summary.get("where_refusal_breaks"):
        lines.append(
            "where refusal breaks, weakest first (harmful refused, then separation): "
            + ", ".join(f"{r['language']} {r['harmful_refused']:.2f}" for r in summary["where_refusal_breaks"])
        )
    if "repair" in summary:
        r = summary["repair"]
        lines.append(f"repair: the {r['source']} refusal vector added at layer {r['layer']} in the weakest languages")
        for lang, entry in r["languages"].items():
            base = entry["baseline"]
            lines.append(
                f"  {lang}: audit harmful {base['harmful']['k']}/{base['harmful']['n']}, harmless "
                f"{base['harmless']['k']}/{base['harmless']['n']}"
                + (" (judge not validated)" if lang in r["judge_not_validated"] else "")
            )
            for coefficient, block in entry["by_coefficient"].items():
                h, s_ = block["harmful"], block["harmless"]
                lines.append(
                    f"    x{coefficient}: harmful {h['k']}/{h['n']} {h['ci95']} (p {h['paired_vs_audit']['p_value']}), "
                    f"harmless {s_['k']}/{s_['n']} {s_['ci95']} (p {s_['paired_vs_audit']['p_value']}): {block['verdict']}"
                )
    return "\n".join(lines)
