"""The report of a refusal-direction run: figures, ``summary.json``, ``completions.jsonl`` and
``index.html``, all drawn from a :class:`~mechref.analyses.refusal_direction.pipeline.RefusalDirectionResult`."""

from __future__ import annotations

import html
import time
from pathlib import Path

from mechref.analyses.refusal_direction.figures import condition_bars, cosine_across_layers, score_heatmaps
from mechref.analyses.refusal_direction.pipeline import RefusalDirectionResult
from mechref.framework.io import write_json, write_jsonl
from mechref.framework.ownership import claim_output_folder
from mechref.judges.degenerate import category_counts
from mechref.rates import format_paired, paired_test
from mechref.report.pages import summary_header, write_index
from mechref.report.plotting import save_figure

PAIRED = (("harmful_baseline", "harmful_ablation"), ("harmless_baseline", "harmless_actadd"))


def paired_tests(result: RefusalDirectionResult) -> list[dict]:
    """McNemar tests of each intervention against the baseline on the same prompts."""
    rows = [{**row, "condition": condition} for condition, rows in result.evaluation.items() for row in rows]
    return [
        paired_test(rows, "condition", "prompt", "refusal", before, after)
        for before, after in PAIRED
        if before in result.evaluation and after in result.evaluation
    ]


def summarize(result: RefusalDirectionResult, figures: list[str] | None = None) -> dict:
    """The numbers of a run, as written to ``summary.json``."""
    selection, chosen = result.selection, result.selection.chosen
    rates = result.rates
    return {
        **summary_header("refusal_direction", result.model),
        "layer": selection.layer,
        "position": selection.position,
        "position_token": result.post_instruction_tokens[selection.position],
        "kl": chosen.kl,
        "bypass_score": chosen.bypass,
        "induce_score": chosen.induce,
        "baseline_refusal_score": {"harmful_val": selection.baseline_harmful, "harmless_val": selection.baseline_harmless},
        "refusal_tokens": result.refusal_tokens.to_dict(),
        "refusal_rate": {c: r.value for c, r in rates.items()},
        "refusal_rate_counts": {c: r.to_dict() for c, r in rates.items()},
        # Refusals as judged; among the rest, replies stuck in a repetition loop are not compliance.
        "reply_categories": {
            c: category_counts([r["refusal"] for r in rows], [r["completion"] for r in rows])
            for c, rows in result.evaluation.items()
        },
        # The same prompts with and without the intervention: exact McNemar tests of the change.
        "paired_tests": paired_tests(result),
        "mean_refusal_score": result.mean_refusal_scores,
        "n_forward_passes_selection": selection.n_forward_passes,
        "n_prompt_passes_selection": selection.n_prompt_passes,
        "selection_mode": selection.settings.mode,
        # auto: why the paper's selection gave way to the choice by cosines (None where it did not).
        **({"selection_fallback": selection.fallback} if selection.settings.mode == "auto" else {}),
        **(
            {
                "cosmic": {
                    "score": chosen.cosmic,
                    "ablation_cosine": chosen.cosmic_ablation,
                    "addition_cosine": chosen.cosmic_addition,
                    "reference_layers": selection.reference_layers,
                    "candidates_scored": sum(s.cosmic is not None for s in selection.scores),
                }
            }
            if selection.settings.mode == "cosmic" or selection.fallback is not None
            else {}
        ),
        "data": {key: p.describe() for key, p in result.prompt_sets.items()},
        "settings": result.settings.to_dict(),
        "exported_model": str(result.exported_model) if result.exported_model else None,
        "resumed_stages": result.resumed_stages,
        "figures": figures or [],
        "timings_s": result.timings,
    }


def format_summary(summary: dict) -> str:
    """The terminal summary of a ``summary.json``."""
    lines = [
        f"model {summary['model']}: refusal direction at layer {summary['layer']}, position {summary['position']} "
        f"({summary['position_token']!r}); bypass {summary['bypass_score']:.3f}, induce {summary['induce_score']:.3f}, "
        f"KL {summary['kl']:.4f}"
    ]
    for condition, rate in summary.get("refusal_rate_counts", {}).items():
        low, high = rate["ci95"]
        degenerate = summary.get("reply_categories", {}).get(condition, {}).get("degenerate", 0)
        lines.append(
            f"  {condition:18s} refusal rate {rate['rate']:.2f} ({rate['k']}/{rate['n']}, 95% CI {low:.2f}-{high:.2f})"
            f"   mean refusal score {summary['mean_refusal_score'][condition]:+.2f}"
            + (f"   degenerate {degenerate}/{rate['n']}" if degenerate else "")
        )
    for test in summary.get("paired_tests", []):
        lines.append(format_paired(test))
    return "\n".join(lines)


def captions(result: RefusalDirectionResult) -> dict[str, str]:
    """One sentence per figure saying what it shows for this run."""
    chosen = result.selection.chosen
    found = {
        "candidate_scores": (
            f"The chosen direction (star) is at layer {chosen.layer}, position {chosen.position}: bypass score "
            f"{chosen.bypass:+.2f}, induce score {chosen.induce:+.2f}, KL {chosen.kl:.3f}; blank cells were not scored."
        ),
        "cosine_across_layers": "How similar the candidate directions of every layer are to the chosen one.",
    }
    if result.evaluation:
        rates = result.rates
        base, ablated = rates.get("harmful_baseline"), rates.get("harmful_ablation")
        found["refusal_by_condition"] = (
            f"Ablating the direction takes the harmful prompts' refusals from {base.k}/{base.n} to {ablated.k}/{ablated.n}; "
            "bars show 95% intervals."
            if base and ablated
            else "Refusal rate and mean refusal score under each intervention."
        )
    return found


def report_refusal_direction(result: RefusalDirectionResult, out: str | Path, *, echo: bool = True) -> dict:
    """Write the figures, ``summary.json``, ``completions.jsonl`` and ``index.html`` of ``result`` into ``out``."""
    out = claim_output_folder(out)  # refuses a folder of files mechref did not write
    started = time.perf_counter()
    if echo:
        print("      drawing figures …", flush=True)
    static = result.settings.static
    figures = save_figure(
        score_heatmaps(result.selection, result.n_layers, result.post_instruction_tokens), out / "candidate_scores", static
    )
    figures += save_figure(cosine_across_layers(result.candidates, result.selection), out / "cosine_across_layers", static)
    if result.evaluation:
        figures += save_figure(
            condition_bars(dict(result.rates), result.mean_refusal_scores),
            out / "refusal_by_condition",
            static,
        )
        write_jsonl(out / "completions.jsonl", [row for rows in result.evaluation.values() for row in rows])
    result.timings["figures"] = round(time.perf_counter() - started, 2)
    summary = summarize(result, [str(p) for p in figures])
    write_json(out / "summary.json", summary)
    intro = (
        f"<p>Refusal direction of <code>{html.escape(summary['model'])}</code> (Arditi et al. 2024): "
        "difference-in-means candidates over post-instruction positions and layers, selected by the bypass "
        "score (refusal score of harmful prompts with the candidate ablated, lower is better), the induce "
        "score (refusal score of harmless prompts with it added) and the KL divergence it causes on harmless "
        "prompts.</p>"
    )
    extra = [("summary.json", "every number of this run")]
    if result.evaluation:
        extra.append(("completions.jsonl", "every test reply under every condition, with its verdict"))
    write_index(
        out,
        f"Refusal direction: {summary['model']}",
        intro,
        format_summary(summary),
        [p.name for p in figures],
        extra,
        captions(result),
    )
    if echo:
        print(format_summary(summary))
        print(f"done; report in {out / 'index.html'}")
    return summary
