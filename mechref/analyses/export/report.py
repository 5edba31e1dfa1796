"""The report of an export run: a table on screen, ``summary.json``, a figure and ``index.html``."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechref.analyses.export.pipeline import REFERENCE, ExportResult
from mechref.edits.orthogonalize import model_card
from mechref.framework.io import read_json, write_json
from mechref.framework.ownership import claim_output_folder
from mechref.rates import Rate, mcnemar_exact, mean_interval
from mechref.report.pages import GLOSSARY, summary_header, write_index
from mechref.report.palette import EDIT_COLORS
from mechref.report.plotting import interval_error_bars, save_figure

#: How far an export's first-token KL may be from the in-memory edit's: (absolute, relative).
KL_TOLERANCE = (0.005, 0.1)


def kl_tolerance(reference_kl: float) -> float:
    """How far an export's mean KL may lie from its reference's: 0.005 nats or 10%, whichever is larger
    (bfloat16 rounding of the edited weights moves it by about 0.001 on the embedded model).

    >>> kl_tolerance(0.02), kl_tolerance(0.3)
    (0.005, 0.03)
    """
    absolute, relative = KL_TOLERANCE
    return round(max(absolute, relative * reference_kl), 6)


def export_manifest(summary: dict) -> dict:
    """One entry per written file: what it is, where it came from, the edit, and what it measured."""
    measured = {
        name.removeprefix("export: "): block for name, block in summary["conditions"].items() if name.startswith("export: ")
    }
    return {
        "mechref_version": summary["mechref_version"],
        "source_model": {"model": summary["model"], "source": summary["source"], "dtype": summary["dtype"]},
        "direction": summary["direction"],
        **(
            {"deviation_from_hook_ablation": summary["deviation_from_hook_ablation"]}
            if "deviation_from_hook_ablation" in summary
            else {}
        ),
        "artifacts": {
            kind: {
                "path": path,
                "measured": {
                    name: {
                        k: block[k]
                        for k in ("loaded_by", "refusal", "kl_first_token", "kl_to_hook_ablation", "reproduces_reference")
                        if k in block
                    }
                    for name, block in measured.items()
                    if name == kind or name == f"{kind} in llama.cpp"
                },
            }
            for kind, path in summary["artifacts"].items()
        },
    }


def summarize(result: ExportResult) -> dict:
    """Every number of the run; each export beside the in-memory edit it must reproduce.

    An export *reproduces* its reference when its refusal rate lies inside the reference's 95%
    Wilson interval, and its mean first-token KL is within :data:`KL_TOLERANCE` of the reference's
    (where both were measured); the exact McNemar test of the paired verdicts is given beside it.
    """
    summary: dict = {
        **summary_header("export", result.model),
        "direction": result.direction,
        "artifacts": result.artifacts,
        "settings": result.settings.to_dict(),
        "conditions": {},
    }
    for m in result.measured:
        verdicts = result.refusals[m.name]
        block: dict = {
            "loaded_by": m.loaded_by,
            "refusal": Rate.of(verdicts).to_dict(),
            "kl_first_token": mean_interval(m.kl) if m.kl else None,
        }
        if m.kl_to_hooks:
            block["kl_to_hook_ablation"] = mean_interval(m.kl_to_hooks)
        kind = m.name.removeprefix("export: ").removesuffix(" in llama.cpp")
        if m.name.startswith("export: ") and REFERENCE[kind] in result.refusals:
            reference = result.refusals[REFERENCE[kind]]
            low, high = Rate.of(reference).interval
            block["reference"] = REFERENCE[kind]
            rate_ok = low <= Rate.of(verdicts).value <= high
            reference_kl = next((r.kl for r in result.measured if r.name == REFERENCE[kind]), None)
            if m.kl and reference_kl:
                gap = abs(sum(m.kl) / len(m.kl) - sum(reference_kl) / len(reference_kl))
                block["kl_gap_to_reference"] = round(gap, 6)
                rate_ok = rate_ok and gap <= kl_tolerance(sum(reference_kl) / len(reference_kl))
            block["reproduces_reference"] = bool(rate_ok)
            block["paired_vs_reference"] = mcnemar_exact(reference, verdicts)
            block["same_verdicts"] = sum(a == b for a, b in zip(reference, verdicts))
            # Greedy replies word for word: rounding (bfloat16, another engine) makes long replies
            # part ways at some token, so this is evidence, not the test of reproduction.
            reference_replies = next(r.replies for r in result.measured if r.name == REFERENCE[kind])
            block["identical_replies"] = sum(a == b for a, b in zip(reference_replies, m.replies))
        summary["conditions"][m.name] = block
    deviation = hook_deviation(result)
    if deviation is not None:
        summary["deviation_from_hook_ablation"] = deviation
    summary["resumed_stages"] = result.resumed_stages
    summary["timings_s"] = {k: round(v, 2) for k, v in result.timings.items()}
    return summary


def hook_deviation(result: ExportResult) -> dict | None:
    """How far the weight edit (in memory) lies from the directional ablation with hooks it stands for,
    or None where both were not measured: the mean first-token KL(hooks || weight edit) on the harmless
    prompts, and how many greedy replies to the harmful prompts are the same word for word. Zero up to
    rounding for the exact families; for Gemma-2, Gemma-3 and OLMo-2 the edit goes through the post-norms
    and rescales what each writer keeps (:mod:`mechref.edits.orthogonalize`), so this is its measured cost."""
    by_name = {m.name: m for m in result.measured}
    hooks, edit = by_name.get("directional ablation (hooks)"), by_name.get("weight edit (in memory)")
    if hooks is None or edit is None or not edit.kl_to_hooks:
        return None
    same = sum(a == b for a, b in zip(hooks.replies, edit.replies))
    deviation = sum(edit.kl_to_hooks) / len(edit.kl_to_hooks)
    ablation = sum(hooks.kl) / len(hooks.kl) if hooks.kl else 0.0
    return {
        "through_post_norms": bool(result.direction.get("edit", {}).get("through_post_norms", False)),
        "kl_first_token": mean_interval(edit.kl_to_hooks),
        "kl_first_token_max": round(max(edit.kl_to_hooks), 6),
        "identical_replies": {"k": same, "n": len(edit.replies)},
        "same_verdicts": sum(a == b for a, b in zip(result.refusals[hooks.name], result.refusals[edit.name])),
        # Within the tolerance an export has against its reference (kl_tolerance of the ablation's own KL).
        "close": deviation <= kl_tolerance(ablation),
    }


def format_summary(summary: dict) -> str:
    """The summary as the lines the command prints: each artifact, then each condition's refusal and KL."""
    lines = [f"exports of {summary['model']} ({summary['dtype']}), direction at layer {summary['direction']['layer']}"]
    lines += [f"  {kind:15s} {path}" for kind, path in summary["artifacts"].items()]
    for name, block in summary["conditions"].items():
        rate, kl = block["refusal"], block["kl_first_token"]
        shown = f"KL {kl['mean']:.4f}" if kl else "KL not measured"
        line = f"{name:36s} refusal {rate['k']}/{rate['n']} {rate['ci95']}   {shown}"
        if "reproduces_reference" in block:
            verdict = "reproduces" if block["reproduces_reference"] else "DOES NOT reproduce"
            line += f"   {verdict} {block['reference']} (same verdict on {block['same_verdicts']}/{rate['n']})"
        lines.append(line)
    deviation = summary.get("deviation_from_hook_ablation")
    if deviation:
        kl, same = deviation["kl_first_token"], deviation["identical_replies"]
        how = "through the post-norms" if deviation["through_post_norms"] else "exact family"
        lines.append(
            f"weight edit vs hook ablation ({how}): KL(hooks || edit) {kl['mean']:.4f}"
            f" (max {deviation['kl_first_token_max']:.4f}), identical greedy replies {same['k']}/{same['n']},"
            f" same verdict {deviation['same_verdicts']}/{same['n']}"
        )
        if not deviation["close"]:
            lines.append(
                "  WARNING: on this model the weight edit is NOT the hook ablation (its KL from the hooks is beyond the "
                "export tolerance): the exports carry a different edit, their manifest and model card say by how much; "
                "for analysis use the hooks (mechref.interventions.directional_ablation)"
            )
    return "\n".join(lines)


def _edit_color(name: str) -> str:
    """The damage figure's edit colours: unedited grey, weight edits orange, additions light blue."""
    if name == "unedited":
        return EDIT_COLORS["original"]
    if "addition" in name or "control-vector" in name:
        return EDIT_COLORS["actadd"]
    return EDIT_COLORS["ablation"]


def _pattern(name: str) -> str:
    # Exports hatched, the in-memory edits they must reproduce plain.
    return "/" if name.startswith("export:") else ""


def export_figure(summary: dict) -> go.Figure:
    """Refusal rate (with its k/n) of each export, loaded by its own library, beside mechref's edit."""
    names = list(summary["conditions"])
    blocks = [summary["conditions"][n] for n in names]
    labels = [f"{n}<br>{b['refusal']['k']}/{b['refusal']['n']}" for n, b in zip(names, blocks)]
    colors = [_edit_color(n) for n in names]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("refusal of held-out harmful prompts", "first-token KL on harmless prompts")
    )
    fig.add_trace(
        go.Bar(
            x=labels,
            y=[b["refusal"]["rate"] for b in blocks],
            marker_color=colors,
            marker_pattern_shape=[_pattern(n) for n in names],
            showlegend=False,
            error_y=interval_error_bars([b["refusal"] for b in blocks]),
            hovertemplate="%{x}<br>%{y:.2f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    kl_names = [n for n, b in zip(names, blocks) if b["kl_first_token"]]
    kls = [b["kl_first_token"] for b in blocks if b["kl_first_token"]]
    colors_kl = [_edit_color(n) for n in kl_names]
    fig.add_trace(
        go.Bar(
            x=kl_names,
            y=[k["mean"] for k in kls],
            marker_color=colors_kl,
            marker_pattern_shape=[_pattern(n) for n in kl_names],
            showlegend=False,
            error_y=dict(
                type="data",
                symmetric=False,
                color="#444444",
                array=[(k["ci95"][1] - k["mean"]) if k["ci95"] else 0 for k in kls],
                arrayminus=[(k["mean"] - k["ci95"][0]) if k["ci95"] else 0 for k in kls],
            ),
            hovertemplate="%{x}<br>KL %{y:.4f}<extra></extra>",
        ),
        row=1,
        col=2,
    )
    fig.update_yaxes(title_text="share of replies judged refusals", range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="KL(unedited ‖ edited), nats", row=1, col=2)
    fig.update_xaxes(tickangle=-30)
    fig.update_layout(
        title=f"Each export loaded back by its consuming library, beside the in-memory edit<br><sup>{summary['model']}; "
        "k/n under each bar; exports hatched; error bars: 95% Wilson intervals (rates), 95% intervals over prompts (KL)</sup>",
        height=560,
        width=1200,
        margin=dict(t=110, b=160),
    )
    return fig


def report_export(result: ExportResult, out: str | Path, *, echo: bool = True) -> dict:
    """Print the table; write ``summary.json``, the figure and ``index.html`` into ``out``."""
    out = claim_output_folder(out)
    summary = summarize(result)
    written: list[str] = []
    if summary["conditions"]:
        written = [p.name for p in save_figure(export_figure(summary), out / "exports", static=result.settings.static)]
    summary["figures"] = written
    write_json(out / "summary.json", summary)
    manifest = export_manifest(summary)
    write_json(out / "MANIFEST.json", manifest)
    # The folders carry their own measurements too, beside their provenance.
    for kind in ("hf", "lora"):
        edit_file = out / summary["artifacts"].get(kind, "-") / "mechref_edit.json"
        if kind in summary["artifacts"] and edit_file.is_file() and manifest["artifacts"][kind]["measured"]:
            info = {**read_json(edit_file), "measured": manifest["artifacts"][kind]["measured"]}
            if "deviation_from_hook_ablation" in summary:
                info["deviation_from_hook_ablation"] = summary["deviation_from_hook_ablation"]
            write_json(edit_file, info)
            if kind == "hf":  # its model card says what was measured too
                (edit_file.parent / "README.md").write_text(model_card(info), encoding="utf-8")
    text = format_summary(summary)
    described = {
        "hf": "transformers folder",
        "lora": "PEFT LoRA adapter",
        "gguf": "GGUF for llama.cpp / Ollama",
        "control-vector": "llama.cpp control vector",
    }
    files = [(path, described[kind]) for kind, path in summary["artifacts"].items()]
    files += [
        ("MANIFEST.json", "every file: source model, direction, edit, mechref version, what it measured"),
        ("summary.json", "every number of this run"),
        ("verify.json", "every reply and KL value"),
    ]
    if (out / "verify_llama_cpp.json").is_file():
        files.append(("verify_llama_cpp.json", "every reply llama.cpp gave"))
    reproduced = [n for n, b in summary["conditions"].items() if b.get("reproduces_reference")]
    caption = {
        "exports": f"{len(reproduced)} of {sum('reference' in b for b in summary['conditions'].values())} exports "
        "reproduce the refusal rate of the in-memory edit within its 95% interval."
    }
    index = write_index(
        out,
        f"Exports of the refusal-direction edit: {summary['model']}",
        "<p>The edit written for the tools people run models with, each file loaded back by the library that reads it "
        "and measured on held-out prompts beside the in-memory edit.</p>",
        text,
        written,
        files,
        caption,
        (*GLOSSARY, ("KL", "KL divergence of the next-token distribution after each harmless prompt, unedited against edited")),
    )
    if echo:
        print(text)
        print(f"report in {index}")
    return summary
