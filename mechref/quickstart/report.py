"""The report of a quickstart run: the replies and rates on screen, ``summary.json`` and the direction."""

from __future__ import annotations

from pathlib import Path

from mechref import __version__
from mechref.io import write_json, write_tensors
from mechref.ownership import claim_output_folder
from mechref.quickstart.pipeline import QuickstartResult


def summarize(result: QuickstartResult) -> dict:
    return {
        "analysis": "quickstart",
        "mechref_version": __version__,
        "model": result.model["model"],
        "source": result.model["source"],
        "dtype": result.model["dtype"],
        "layer": result.layer,
        "position": -1,
        "n_train": result.settings.n_train,
        "n_eval": result.settings.n_eval,
        "seed": result.settings.seed,
        "train_fingerprints": result.train_fingerprints,
        "direction_norm": float(result.direction.norm()),
        "refusal_rate": {c: r.value for c, r in result.rates.items()},
        "refusal_rate_counts": {c: r.to_dict() for c, r in result.rates.items()},
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
    if echo:
        for condition, rows in summary["replies"].items():
            print(f"\n== {condition}: refusal rate {result.rates[condition]}")
            for row in rows:
                print(f"  [{'REFUSE' if row['refusal'] else 'comply'}] {row['prompt'][:60]!r}\n      -> {row['reply'][:100]!r}")
    write_tensors(
        out / "direction.safetensors",
        {"direction": result.direction, "mean_harmful": result.mean_harmful, "mean_harmless": result.mean_harmless},
    )
    write_json(out / "summary.json", summary)
    if echo:
        print(f"\nrefusal rates: {', '.join(f'{c} {r}' for c, r in result.rates.items())}")
        print(f"wrote {out / 'summary.json'} and {out / 'direction.safetensors'}")
    return summary
