"""The report of a quickstart run: the replies and rates on screen, ``summary.json``, the direction,
a refusal-rate figure and ``index.html`` with every reply."""

from __future__ import annotations

import html
from pathlib import Path

from mechref.analyses.quickstart.pipeline import QuickstartResult
from mechref.framework.io import write_json, write_tensors
from mechref.framework.ownership import claim_output_folder
from mechref.report.pages import summary_header, write_index
from mechref.report.plotting import rate_bars, save_figure


def summarize(result: QuickstartResult) -> dict:
    """The run as the plain dictionary written to ``summary.json``."""
    return {
        **summary_header("quickstart", result.model),
        "layer": result.layer,
        "position": -1,
        "n_train": result.settings.n_train,
        "n_eval": result.settings.n_eval,
        "seed": result.settings.seed,
        "train_fingerprints": result.train_fingerprints,
        "direction_norm": float(result.direction.norm()),
        "refusal_rate": {c: r.value for c, r in result.rates.items()},
        "refusal_rate_counts": {c: r.to_dict() for c, r in result.rates.items()},
        # Set when the model refused harmful prompts no more often than harmless ones: the rates then measure nothing.
        "no_refusal_to_explain": result.no_refusal_to_explain,
        "replies": {
            c: [{"prompt": p, "reply": r, "refusal": v} for p, r, v in zip(result.prompts[c], texts, result.verdicts[c])]
            for c, texts in result.replies.items()
        },
        "settings": result.settings.to_dict(),
        "timings": result.timings,
    }


def report_quickstart(result: QuickstartResult, out: str | Path, *, echo: bool = True) -> dict:
    """Print the replies and rates; write ``summary.json`` and ``direction.safetensors`` into ``out``."""
    out = claim_output_folder(out)  # refuses a folder of files mechref did not write
    summary = summarize(result)
    warning = result.no_refusal_to_explain
    if echo:
        for condition, rows in summary["replies"].items():
            print(f"\n== {condition}: refusal rate {result.rates[condition]}")
            for row in rows:
                print(f"  [{'REFUSE' if row['refusal'] else 'comply'}] {row['prompt'][:60]!r}\n      -> {row['reply'][:100]!r}")
    write_tensors(
        out / "direction.safetensors",
        {"direction": result.direction, "mean_harmful": result.mean_harmful, "mean_harmless": result.mean_harmless},
    )
    # Only HTML: the quickstart is the first thing a newcomer runs, before kaleido is installed.
    written = [p.name for p in save_figure(rate_bars(result.rates), out / "refusal_rate", static=())]
    summary["figures"] = written
    write_json(out / "summary.json", summary)
    rates_text = "\n".join(
        f"{c:<20}{r.value:.2f} ({r.k}/{r.n}) [{r.interval[0]:.2f}, {r.interval[1]:.2f}]" for c, r in result.rates.items()
    )
    replies = "".join(
        f"<h3>{html.escape(condition)}: {html.escape(str(result.rates[condition]))}</h3><ul>"
        + "".join(
            f"<li><b>{'refusal' if row['refusal'] else 'answer'}</b>: {html.escape(row['prompt'])}"
            f"<br><small>{html.escape(row['reply'])}</small></li>"
            for row in rows
        )
        + "</ul>"
        for condition, rows in summary["replies"].items()
    )
    reason = html.escape((warning or "").removeprefix("no refusal to explain: "))
    banner = f'<p class="no-refusal"><strong>No refusal to explain.</strong> {reason}.</p>'
    index = write_index(
        out,
        f"Quickstart: {summary['model']}",
        f"<p>Difference-in-means refusal direction at layer {result.layer} (last prompt token) from "
        f"{result.settings.n_train} harmful and {result.settings.n_train} harmless bundled prompts; replies to "
        f"{result.settings.n_eval} held-out prompts per condition.</p>" + (banner if warning else ""),
        "refusal rate (k/n) [95% interval]\n" + rates_text,
        written,
        [("summary.json", "every number and reply of this run"), ("direction.safetensors", "the direction and both means")],
        {"refusal_rate": "Share of replies judged refusals: ablating the direction removes refusal, adding it induces it."},
        # The replies themselves, after the figures: the quickstart is about reading them.
        more_html=f"<h2>Replies</h2>{replies}",
    )
    if echo:
        print(f"\nrefusal rates: {', '.join(f'{c} {r}' for c, r in result.rates.items())}")
        if warning:
            print(f"WARNING: {warning}")
        print(f"wrote {out / 'summary.json'} and {out / 'direction.safetensors'}")
        print(f"report in {index}")
    return summary
