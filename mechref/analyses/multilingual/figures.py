"""Plotly figures of the multilingual analyses."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from mechref.analyses.multilingual.metrics import mean_off_diagonal
from mechref.report.palette import HARMFUL, HARMLESS
from mechref.report.plotting import interval_error_bars


def _heatmap(z, x, y, title, zmin=None, zmax=None, colorscale="RdBu_r", fmt=".2f", xtitle="", ytitle="", ztitle="") -> go.Figure:

    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=x,
            y=y,
            zmin=zmin,
            zmax=zmax,
            colorscale=colorscale,
            texttemplate="%{z:" + fmt + "}",
            colorbar=dict(title=dict(text=ztitle, side="right")),
            hovertemplate=f"{ytitle} %{{y}}<br>{xtitle} %{{x}}<br>{ztitle} %{{z:{fmt}}}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title=xtitle,
        yaxis_title=ytitle,
        # At least room for the colour bar and its title: a two-row matrix (baseline and one source,
        # as with harmful prompts only) squeezed them into a few pixels.
        height=max(340, 120 + 45 * len(y)),
        width=200 + 60 * len(x),
        yaxis_autorange="reversed",
    )
    return fig


def cosine_heatmap(matrix: Tensor, languages: Sequence[str], layer: int) -> go.Figure:
    """Cosine of every pair of the languages' refusal vectors at ``layer``, as a heatmap."""
    return _heatmap(
        matrix.tolist(),
        list(languages),
        list(languages),
        f"Cosine similarity of the languages' refusal vectors (layer {layer})",
        zmin=-1,
        zmax=1,
        xtitle="language",
        ytitle="language",
        ztitle="cosine similarity",
    )


def cosine_trend(by_layer: Tensor, languages: Sequence[str], layer: int, reference: str = "en") -> go.Figure:
    """Mean pairwise cosine per layer, and each language's cosine with the reference language."""

    fig = go.Figure()
    layers = list(range(by_layer.shape[0]))
    fig.add_trace(
        go.Scatter(x=layers, y=mean_off_diagonal(by_layer).tolist(), name="mean over pairs", line=dict(width=4, color="black"))
    )
    if reference in languages:
        r = list(languages).index(reference)
        for i, language in enumerate(languages):
            if i != r:
                fig.add_trace(go.Scatter(x=layers, y=by_layer[:, r, i].tolist(), name=f"{language} vs {reference}", mode="lines"))
    fig.add_vline(x=layer, line_dash="dash", line_color="grey", annotation_text="direction layer")
    fig.update_layout(
        title="Parallelism of the refusal vectors across layers",
        xaxis_title="layer",
        yaxis_title="cosine similarity",
        yaxis_range=[-0.2, 1.05],
        height=450,
        width=950,
    )
    return fig


def transfer_heatmap(
    share: Sequence[Sequence[float]],
    sources: Sequence[str],
    targets: Sequence[str],
    mode: str,
    layer: int,
    unreliable: Sequence[str] = (),
) -> go.Figure:
    """Share of each target language's prompts refusing with each source's vector ablated or added;
    a target whose logit score is unreliable (its refusal tokens open its harmless replies too) is
    marked so in its column label."""
    what = (
        "share of harmful prompts still refused (refusal score > 0) when the source's direction is ablated"
        if mode == "ablation"
        else f"share of harmless prompts refused (score > 0) with the source's vector added at layer {layer}"
    )
    return _heatmap(
        [list(row) for row in share],
        [f"{t}<br>(score unreliable)" if t in unreliable else t for t in targets],
        list(sources),
        f"Cross-lingual transfer ({mode}):<br><sup>{what}</sup>",
        zmin=0,
        zmax=1,
        colorscale="Reds",
        xtitle="target language (prompts)",
        ytitle="source language (vector)",
        ztitle="share of prompts refused",
    )


def audit_bars(rates: dict, threshold: float = 0.10) -> go.Figure:
    """Baseline refusal of harmful and harmless prompts per language, 95% Wilson intervals as error
    bars and k/n under each language; a language whose judge is not validated is hatched and named
    so, and an over-refusing one is marked."""

    languages = list(rates)
    status = {l: rates[l].get("status", "") for l in languages}

    def counts(language: str) -> str:
        found = [rates[language].get(f"{label}_counts") for label in ("harmful", "harmless")]
        return " · ".join(f"{c['k']}/{c['n']}" if c else "–" for c in found)

    # Counts under each language (harmful · harmless), not on the bars, where error bars would cross them.
    labels = [
        f"{l}<br>{counts(l)}"
        + ("<br>(judge not validated)" if status[l] == "judge not validated" else "")
        + ("<br>(over-refusing)" if status[l].startswith("over-refusing") else "")
        for l in languages
    ]
    fig = go.Figure()
    for label, name, color in (("harmful", "harmful refused", HARMFUL), ("harmless", "harmless refused", HARMLESS)):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[rates[l][label] for l in languages],
                name=name,
                marker_color=color,
                marker_pattern_shape=["/" if status[l] == "judge not validated" else "" for l in languages],
                error_y=interval_error_bars([rates[l].get(f"{label}_counts") for l in languages]),
            )
        )
    fig.add_hline(
        y=1 - threshold,
        line_dash="dash",
        annotation_text=f"safety-aligned: harmful compliance <= {threshold:.0%}",
        annotation_position="bottom left",
    )
    fig.update_layout(
        barmode="group",
        title="Baseline refusal per language (test prompts, greedy replies)<br><sup>k/n under each language: "
        "harmful · harmless refused; error bars: 95% Wilson interval</sup>",
        yaxis_range=[0, 1.1],
        yaxis_title="share of replies judged refusals",
        xaxis_title="language",
        height=500,
        width=980,
    )
    return fig


def silhouette_lines(scores: Tensor, languages: Sequence[str], layer: int) -> go.Figure:
    """Silhouette score of harmful against harmless prompts by layer, one line per language."""
    fig = go.Figure()
    for i, language in enumerate(languages):
        fig.add_trace(go.Scatter(x=list(range(scores.shape[1])), y=scores[i].tolist(), name=language, mode="lines+markers"))
    fig.add_vline(x=layer, line_dash="dash", line_color="grey", annotation_text="direction layer")
    fig.update_layout(
        title="Silhouette score of harmful vs harmless activations per layer",
        xaxis_title="layer",
        yaxis_title="silhouette score",
        height=450,
        width=950,
    )
    return fig


def silhouette_bars(scores: Tensor, languages: Sequence[str], layer: int) -> go.Figure:
    """Silhouette score of each language at ``layer`` (the direction's), as bars."""
    values = scores[:, layer].tolist()
    fig = go.Figure(go.Bar(x=list(languages), y=values, text=[f"{v:.2f}" for v in values], textposition="outside"))
    fig.update_layout(title=f"Silhouette score at layer {layer}", yaxis_title="silhouette score", height=420, width=800)
    return fig


def pca_panels(coords: dict, languages: Sequence[str], ratio: Tensor, layer: int, fit_note: str) -> go.Figure:
    """One scatter per language: harmful, harmless, and harmful prompts the model complied with."""

    cols = min(4, len(languages))
    rows = -(-len(languages) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(languages), horizontal_spacing=0.04, vertical_spacing=0.1)
    styles = {
        "harmful": dict(color=HARMFUL, size=6),
        "harmless": dict(color=HARMLESS, size=6),
        "jailbroken": dict(color="gold", size=12, symbol="star", line=dict(color="black", width=1)),
    }
    for i, language in enumerate(languages):
        row, col = i // cols + 1, i % cols + 1
        for kind, style in styles.items():
            points = coords[language].get(kind)
            if points is None or len(points) == 0:
                continue
            fig.add_trace(
                go.Scatter(
                    x=points[:, 0].tolist(),
                    y=points[:, 1].tolist(),
                    mode="markers",
                    marker=style,
                    name=kind,
                    legendgroup=kind,
                    showlegend=i == 0,
                ),
                row=row,
                col=col,
            )
    fig.update_layout(
        title=f"PCA of the last-token activations at layer {layer} ({fit_note}; "
        f"PC1 {float(ratio[0]):.0%}, PC2 {float(ratio[1]):.0%} of variance)",
        height=330 * rows + 80,
        width=1300,
    )
    return fig


def addition_check(check: dict) -> go.Figure:
    """The addition matrix's source row checked by generation: per target language, the share of
    harmless prompts refused in greedy replies with the vector added (k/n, 95% Wilson interval)
    beside the logit proxy's share on the same prompts, and the baseline refusal."""
    from mechref.report.plotting import interval_error_bars

    languages = list(check["refusal_rate_by_generation"])
    generated = [check["refusal_rate_by_generation"][l] for l in languages]
    unvalidated = set(check.get("judge_not_validated", []))
    # A language whose judge is not validated says so under its bars: its rate is not a measurement.
    labels = [
        f"{l}<br>{g['k']}/{g['n']}" + ("<br>(judge not validated)" if l in unvalidated else "")
        for l, g in zip(languages, generated)
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            name="greedy replies judged refusals",
            x=labels,
            y=[g["rate"] for g in generated],
            marker_color=HARMFUL,
            error_y=interval_error_bars(generated),
        )
    )
    fig.add_trace(
        go.Bar(
            name="logit proxy: refusal score > 0",
            x=labels,
            y=[check["refusing_share_by_logit_score"][l] for l in languages],
            marker_color="#999999",
        )
    )
    fig.add_trace(
        go.Scatter(
            name="baseline (nothing added), replies",
            x=labels,
            y=[check["baseline_harmless_refusal_rate"][l] for l in languages],
            mode="markers",
            marker=dict(symbol="line-ew-open", size=28, color=HARMLESS, line=dict(width=3)),
        )
    )
    fig.update_layout(
        title=f"Addition of the {check['source']} vector at layer {check['layer']}: generation vs the logit proxy"
        "<br><sup>harmless prompts of each language; k/n under each language; error bars: 95% Wilson interval</sup>",
        barmode="group",
        yaxis_range=[0, 1.05],
        yaxis_title="share of harmless prompts refused",
        xaxis_title="target language",
        height=470 if unvalidated else 440,
        width=900,
        # A third line under the bars ("judge not validated") would run the axis title into the legend.
        legend=dict(orientation="h", y=-0.33 if unvalidated else -0.25),
    )
    return fig
