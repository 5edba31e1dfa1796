"""The report of an edit search: the front as an interactive figure, the confirmed points with
their rates and intervals, ``summary.json`` and ``index.html``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import plotly.graph_objects as go

from mechref.analyses.optimize_edit.pipeline import OptimizeEditResult
from mechref.framework.io import write_json
from mechref.framework.ownership import claim_output_folder
from mechref.rates import Rate, mcnemar_exact, mean_interval
from mechref.report.pages import GLOSSARY, summary_header, write_index
from mechref.report.plotting import save_figure


def summarize(result: OptimizeEditResult) -> dict:
    """Every number of the search; each confirmed point beside the reference edit.

    A point *dominates* the reference when its confirmed refusal rate is no higher and its KL no
    higher, one of them strictly; it *matches* it when its refusal rate lies within the reference's
    95% interval and its KL interval overlaps the reference's.
    """
    rows = {row["label"]: row for row in result.confirmed}
    reference = rows["reference (today's edit)"]
    ref_rate = Rate.of(reference["refusals"])
    ref_kl = mean_interval(reference["kl"])
    confirmed = {}
    for label, row in rows.items():
        rate, kl = Rate.of(row["refusals"]), mean_interval(row["kl"])
        block: dict = {"trial": row["trial"], "point": row["point"], "refusal": rate.to_dict(), "kl_first_token": kl}
        if label not in ("unedited", "reference (today's edit)"):
            block["paired_vs_reference"] = mcnemar_exact(reference["refusals"], row["refusals"])
            no_worse = rate.value <= ref_rate.value and kl["mean"] <= ref_kl["mean"]
            block["dominates_reference"] = bool(no_worse and (rate.value < ref_rate.value or kl["mean"] < ref_kl["mean"]))
            low, high = ref_rate.interval
            overlap = kl["ci95"] and ref_kl["ci95"] and kl["ci95"][0] <= ref_kl["ci95"][1] and ref_kl["ci95"][0] <= kl["ci95"][1]
            block["matches_reference"] = bool(low <= rate.value <= high and overlap)
            # Paired over the same harmless prompts: far tighter than comparing the two intervals.
            block["kl_difference_vs_reference"] = mean_interval([a - b for a, b in zip(row["kl"], reference["kl"])])
        confirmed[label] = block
    return {
        **summary_header("optimize_edit", result.model),
        "reference_layer": result.reference_layer,
        "position": result.position,
        "refusal_tokens": result.refusal_tokens,
        "prompts": result.prompts,
        "search": {
            "n_trials": len(result.trials),
            "seconds": round(result.search_seconds, 1),
            "front": [t for t in result.trials if t["pareto"]],
            "reference_trial": result.trials[0],
        },
        "confirmed": confirmed,
        "exported_model": result.exported_model,
        "settings": result.settings.to_dict(),
        "resumed_stages": result.resumed_stages,
        "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
    }


def format_summary(summary: dict) -> str:
    """The summary as the lines the command prints: the search, the reference edit and the front."""
    search = summary["search"]
    ref = search["reference_trial"]
    lines = [
        f"edit search on {summary['model']} ({summary['dtype']}): {search['n_trials']} trials in {search['seconds']:.0f} s, "
        f"front of {len(search['front'])}",
        f"reference edit (layer {summary['reference_layer']}, full strength): proxy refusal score {ref['refusal_score']:+.2f}, "
        f"KL {ref['kl']:.4f}",
        f"confirmed on {summary['prompts']['confirm_harmful']} held-out harmful / {summary['prompts']['confirm_harmless']} "
        "harmless prompts:",
    ]
    for label, block in summary["confirmed"].items():
        rate, kl = block["refusal"], block["kl_first_token"]
        line = f"  {label:26s} refusal {rate['k']}/{rate['n']} {rate['ci95']}   KL {kl['mean']:.4f} {kl['ci95']}"
        if "dominates_reference" in block:
            verdict = "dominates" if block["dominates_reference"] else "matches" if block["matches_reference"] else "neither"
            diff = block["kl_difference_vs_reference"]
            line += (
                f"   vs reference: {verdict} (McNemar p = {block['paired_vs_reference']['p_value']:.3g}; "
                f"KL difference {diff['mean']:+.4f} {diff['ci95']})"
            )
        lines.append(line)
    return "\n".join(lines)


def front_figure(summary: dict, trials: list[dict]) -> go.Figure:
    """Every trial's refusal against KL, the Pareto front marked."""

    def hover(t: dict) -> str:
        return f"trial {t['number']}<br>{json.dumps(t['point'])}".replace("}, ", "},<br>")

    others = [t for t in trials if not t["pareto"]]
    front = sorted((t for t in trials if t["pareto"]), key=lambda t: t["kl"])
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[t["kl"] for t in others],
            y=[t["refusal_score"] for t in others],
            mode="markers",
            name="trial",
            marker=dict(color="#BBBBBB", size=7),
            text=[hover(t) for t in others],
            hovertemplate="%{text}<br>KL %{x:.4f}<br>refusal score %{y:+.2f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[t["kl"] for t in front],
            y=[t["refusal_score"] for t in front],
            mode="lines+markers",
            name="Pareto front",
            marker=dict(color="#0072B2", size=9),
            line=dict(color="#0072B2"),
            text=[hover(t) for t in front],
            hovertemplate="%{text}<br>KL %{x:.4f}<br>refusal score %{y:+.2f}<extra></extra>",
        )
    )
    ref = summary["search"]["reference_trial"]
    fig.add_trace(
        go.Scatter(
            x=[ref["kl"]],
            y=[ref["refusal_score"]],
            mode="markers",
            name="reference (today's edit)",
            marker=dict(symbol="star", size=16, color="#D55E00"),
        )
    )
    by_number = {t["number"]: t for t in trials}
    for label, block in summary["confirmed"].items():
        if block["trial"] is None or label.startswith("reference"):
            continue
        t = by_number[block["trial"]]
        fig.add_annotation(
            x=math.log10(max(t["kl"], 1e-12)),  # annotations on a log axis take log10 coordinates
            y=t["refusal_score"],
            text=f"{label}: {block['refusal']['k']}/{block['refusal']['n']} refused",
            showarrow=True,
            arrowhead=2,
            ax=40,
            ay=-40,
        )
    fig.update_layout(
        title="Edits tried by the search: refusal against side effect<br><sup>each point one edit (hover for its parameters); "
        "proxies on val prompts; lower is better on both axes</sup>",
        xaxis_title="first-token KL on harmless val prompts (nats)",
        yaxis_title="mean refusal score of harmful val prompts",
        xaxis_type="log",
        height=560,
        width=1000,
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def report_optimize_edit(result: OptimizeEditResult, out: str | Path, *, echo: bool = True) -> dict:
    """Print the table; write ``summary.json``, the front figure and ``index.html`` into ``out``."""
    out = claim_output_folder(out)
    summary = summarize(result)
    written = [p.name for p in save_figure(front_figure(summary, result.trials), out / "front", static=result.settings.static)]
    summary["figures"] = written
    write_json(out / "summary.json", summary)
    write_json(out / "trials.json", result.trials)
    text = format_summary(summary)
    index = write_index(
        out,
        f"Edit search: {summary['model']}",
        "<p>A multi-objective search over edits (direction layer and per-layer strengths of the attention and MLP "
        "outputs) for the front of refusal against side effect, with chosen points confirmed by generation.</p>",
        text,
        written,
        [
            ("summary.json", "every number of this run"),
            ("trials.json", "every trial"),
            ("confirm.json", "every reply"),
            ("optuna.db", "the Optuna study (the search resumes from it)"),
        ],
        {"front": "Every trial's proxies; the reference is today's edit, the annotated points were confirmed by generation."},
        (*GLOSSARY, ("Pareto front", "the edits no other edit beats on both refusal and KL")),
    )
    if echo:
        print(text)
        print(f"report in {index}")
    return summary
