"""The report of a damage run: a table on screen, ``summary.json``, figures and ``index.html``."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechref.analyses.damage.pipeline import DamageResult
from mechref.framework.io import write_json
from mechref.framework.ownership import claim_output_folder
from mechref.judges.degenerate import CATEGORIES
from mechref.rates import Rate, mcnemar_exact, mean_interval
from mechref.report.pages import GLOSSARY, summary_header, write_index
from mechref.report.palette import condition_color
from mechref.report.plotting import interval_error_bars, save_figure


def _rate_block(rows: list[dict], key: str, original: list[dict] | None) -> dict:
    verdicts = [bool(r[key]) for r in rows]
    block = {**Rate.of(verdicts).to_dict()}
    block["categories"] = {c: sum(r["category"] == c for r in rows) for c in CATEGORIES if any("category" in r for r in rows)}
    if original is not None and original is not rows:
        block["paired_vs_original"] = {
            "before": "original",
            "after": "this edit",
            **mcnemar_exact([bool(r[key]) for r in original], verdicts),
        }
    return block


def summarize(result: DamageResult, figures: list[str] | None = None) -> dict:
    """The run as the plain dictionary written to ``summary.json`` (``figures``: the pages drawn, listed there)."""
    summary: dict = {
        **summary_header("damage", result.model),
        "conditions": result.conditions,
        "edits": result.edits,
        "warnings": result.warnings,
    }
    summary["kl_ce"] = {
        "n_prompts": len(result.reference_replies),
        "reply_tokens": result.settings.reference_tokens,
        "kl_tokens": result.settings.kl_tokens,
        "by_condition": {
            name: {
                "kl_first_token": mean_interval(d.kl_first),
                "kl_first_tokens": mean_interval(d.kl_mean),
                "cross_entropy": mean_interval(d.cross_entropy),
                "cross_entropy_increase": mean_interval(
                    [x - y for x, y in zip(d.cross_entropy, result.divergence["original"].cross_entropy)]
                ),
            }
            for name, d in result.divergence.items()
        },
    }
    if result.over_refusal:
        original = result.over_refusal["original"]
        summary["over_refusal"] = {
            "data": str(result.settings.xstest),
            "n_prompts": len(original),
            "prompt_ids": [r["id"] for r in original],
            "max_new_tokens": result.settings.max_new_tokens,
            "judge": result.settings.judge,
            "by_condition": {name: _rate_block(rows, "refusal", original) for name, rows in result.over_refusal.items()},
        }
    else:
        summary["over_refusal"] = "not measured (no --xstest file given)"
    if result.gsm8k:
        original = result.gsm8k["original"]
        summary["gsm8k"] = {
            "data": str(result.settings.gsm8k),
            "n_problems": len(original),
            "max_new_tokens": result.settings.gsm8k_max_new_tokens,
            "by_condition": {name: _rate_block(rows, "correct", original) for name, rows in result.gsm8k.items()},
            "not_measured": [name for name in result.conditions if name not in result.gsm8k],
        }
    else:
        summary["gsm8k"] = "not measured (no --gsm8k file given)"
    summary.update(
        {
            "figures": figures or [],
            "settings": result.settings.to_dict(),
            "resumed_stages": result.resumed_stages,
            "timings": result.timings,
        }
    )
    return summary


def format_summary(summary: dict) -> str:
    """The summary as the table the command prints: each condition's over-refusal, GSM8K, KL and cross-entropy."""
    lines = [f"{'condition':<10} {'over-refusal (k/n) [95%]':<30} {'GSM8K correct (k/n) [95%]':<30} KL first token   CE increase"]
    for name in summary["conditions"]:
        cells = []
        for measure in ("over_refusal", "gsm8k"):
            block = summary[measure]["by_condition"].get(name) if isinstance(summary[measure], dict) else None
            cells.append(
                f"{block['rate']:.2f} ({block['k']}/{block['n']}) [{block['ci95'][0]:.2f}, {block['ci95'][1]:.2f}]"
                if block
                else "-"
            )
        kl = summary["kl_ce"]["by_condition"][name]
        lines.append(
            f"{name:<10} {cells[0]:<30} {cells[1]:<30} {kl['kl_first_token']['mean']:<16.4f} "
            f"{kl['cross_entropy_increase']['mean']:+.4f}"
        )
    verbs = {"over_refusal": ("refused", "refusing"), "gsm8k": ("solved", "being solved")}
    for measure in ("over_refusal", "gsm8k"):
        if isinstance(summary[measure], dict):
            for name, block in summary[measure]["by_condition"].items():
                if "paired_vs_original" in block:
                    t = block["paired_vs_original"]
                    lines.append(
                        f"{measure}, original -> {name} on the same {t['n_pairs']} prompts: {t['changed_to_false']} stop "
                        f"{verbs[measure][1]}, {t['changed_to_true']} start; exact McNemar p = {t['p_value']:.3g}"
                    )
        else:
            lines.append(f"{measure}: {summary[measure]}")
    return "\n".join(lines)


def damage_figure(summary: dict) -> go.Figure:
    """Three panels against the unedited model: over-refusal, GSM8K accuracy (k/n, Wilson
    intervals) and the cross-entropy increase on the unedited model's replies (95% intervals)."""
    names = summary["conditions"]
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("over-refusal of safe XSTest prompts", "GSM8K exact match", "cross-entropy increase (nats/token)"),
    )
    for col, measure in enumerate(("over_refusal", "gsm8k"), start=1):
        axis = "" if col == 1 else str(col)  # plotly names the first subplot's axes x and y, not x1 and y1
        if not isinstance(summary[measure], dict):
            fig.add_annotation(text="not measured", showarrow=False, xref=f"x{axis} domain", yref=f"y{axis} domain", x=0.5, y=0.5)
            continue
        measured = [n for n in names if n in summary[measure]["by_condition"]]  # GSM8K may skip the hook edits
        blocks = [summary[measure]["by_condition"][n] for n in measured]
        fig.add_trace(
            go.Bar(
                x=[f"{n}<br>{b['k']}/{b['n']}" for n, b in zip(measured, blocks)],
                y=[b["rate"] for b in blocks],
                marker_color=[condition_color(n) for n in measured],
                error_y=interval_error_bars(blocks),
                showlegend=False,
                hovertemplate="%{x}<br>%{y:.2f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(range=[0, 1.05], title_text="share of prompts", row=1, col=col)
        skipped = summary[measure].get("not_measured") or []
        if skipped:  # say which conditions the panel leaves out, not only the table
            fig.add_annotation(
                text=f"not measured: {', '.join(skipped)}",
                showarrow=False,
                xref=f"x{axis} domain",
                yref=f"y{axis} domain",
                x=0.5,
                y=0.98,
                font=dict(size=11, color="#555555"),
            )
    ce = [summary["kl_ce"]["by_condition"][n]["cross_entropy_increase"] for n in names]
    fig.add_trace(
        go.Bar(
            x=names,
            y=[c["mean"] for c in ce],
            marker_color=[condition_color(n) for n in names],
            error_y=dict(
                type="data",
                symmetric=False,
                array=[(c["ci95"][1] - c["mean"]) if c["ci95"] else 0 for c in ce],
                arrayminus=[(c["mean"] - c["ci95"][0]) if c["ci95"] else 0 for c in ce],
                color="#444444",
            ),
            showlegend=False,
            hovertemplate="%{x}<br>%{y:.4f} nats/token<extra></extra>",
        ),
        row=1,
        col=3,
    )
    fig.update_yaxes(title_text="nats per reply token", row=1, col=3)
    fig.update_layout(
        title=f"What each edit breaks, against the unedited {summary['model']}<br><sup>k/n under each bar; error bars: "
        "95% Wilson intervals (rates), 95% intervals over prompts (cross-entropy)</sup>",
        height=460,
        width=1200,
        margin=dict(t=110),
    )
    return fig


def captions(summary: dict) -> dict[str, str]:
    """One caption per figure, naming the counts behind each rate."""
    parts = []
    for measure, what in (("over_refusal", "refuse"), ("gsm8k", "solve")):
        if isinstance(summary[measure], dict):
            rates = ", ".join(f"{n} {b['k']}/{b['n']}" for n, b in summary[measure]["by_condition"].items())
            parts.append(f"{what}: {rates}")
    return {"damage": "Against the unedited model on the same prompts — " + "; ".join(parts) + "."}


DAMAGE_GLOSSARY = (
    *GLOSSARY,
    ("over-refusal", "a refusal of a safe prompt (XSTest's safe prompts resemble harmful ones on the surface)"),
    ("degenerate", "a reply that ends in a repetition loop: counted apart, neither refusal nor answer"),
    ("thinking only", "a reasoning model's reply that never left its thinking block: no answer to judge, counted apart"),
    ("cross-entropy increase", "how much more surprised an edited model is by the unedited model's own replies (nats per token)"),
)


def report_damage(result: DamageResult, out: str | Path, *, echo: bool = True) -> dict:
    """Print the table; write ``summary.json``, the figure and ``index.html`` into ``out``."""
    out = claim_output_folder(out)
    summary = summarize(result)
    written = [p.name for p in save_figure(damage_figure(summary), out / "damage", static=result.settings.static)]
    summary["figures"] = written
    write_json(out / "summary.json", summary)
    text = format_summary(summary)
    files = [("summary.json", "every number of this run"), ("reference_replies.jsonl", "the unedited model's harmless replies")]
    files += [(f"xstest_{n}.jsonl", f"XSTest replies, {n}") for n in result.over_refusal]
    files += [(f"gsm8k_{n}.jsonl", f"GSM8K solutions, {n}") for n in result.gsm8k]
    index = write_index(
        out,
        f"Damage of an edit: {summary['model']}",
        "<p>Each edit against the unedited model, on the same prompts: over-refusal of safe prompts, task accuracy, "
        "and divergence on the unedited model's own harmless replies.</p>",
        text,
        written,
        files,
        captions(summary),
        DAMAGE_GLOSSARY,
    )
    if echo:
        print(text)
        print(f"report in {index}")
    return summary
