"""Plotly figures of the refusal-direction analysis."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from mechref.analyses.refusal_direction.selection import SelectionResult
from mechref.directions.candidates import CandidateDirections
from mechref.rates import Rate
from mechref.report.palette import condition_color
from mechref.report.plotting import interval_error_bars


def score_heatmaps(selection: SelectionResult, n_layers: int, token_labels: Sequence[str] | None = None) -> go.Figure:
    """Every scored candidate over (position, layer), one panel per score, the chosen one starred.

    Panels: the proxy bypass score (fast mode's ranking on a few prompts), then the full bypass,
    induce and KL scores of the candidates that got them. Blank cells were not scored; the
    pruned last layers are shaded; each colour bar says which way is better and the threshold.
    """

    positions = sorted({s.position for s in selection.scores})
    labels = [f"{p} {token_labels[i]!r}" if token_labels else str(p) for i, p in enumerate(positions)]
    settings = selection.settings
    metrics = [
        ("cosmic", "COSMIC score: activation cosines under ablation + addition", "higher is better"),
        ("proxy_bypass", f"proxy bypass score: first {settings.proxy_prompts} harmful prompts, ablated", "lower is better"),
        ("bypass", "bypass score: harmful prompts, direction ablated", "lower is better"),
        ("induce", "induce score: harmless prompts, direction added", f"kept if > {settings.induce_threshold:g}"),
        ("kl", "KL divergence: harmless prompts, direction ablated", f"kept if <= {settings.kl_threshold:g}"),
    ]
    metrics = [m for m in metrics if any(getattr(s, m[0]) is not None for s in selection.scores)]
    rows = len(metrics)
    fig = make_subplots(rows=rows, cols=1, subplot_titles=[m[1] for m in metrics], vertical_spacing=0.32 / rows)
    cutoff = int(n_layers * (1.0 - settings.prune_layer_fraction))
    for row, (key, _title, rule) in enumerate(metrics, start=1):
        z: list[list[float]] = [[math.nan] * n_layers for _ in positions]
        notes: list[list[str]] = [[""] * n_layers for _ in positions]
        for s in selection.scores:
            value = getattr(s, key)
            i = positions.index(s.position)
            notes[i][s.layer] = ", ".join(s.filtered_by) or "kept"
            if value is not None:
                z[i][s.layer] = value
        top = 1 - (row - 1) / rows
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=list(range(n_layers)),
                y=labels,
                customdata=notes,
                colorscale="RdBu_r" if key not in ("kl", "cosmic") else "Viridis",
                zmid=0 if key not in ("kl", "cosmic") else None,
                colorbar=dict(
                    title=dict(text=f"{key}<br>({rule})", side="right"),
                    x=1.01,
                    y=top - 0.5 / rows,
                    len=0.8 / rows,
                    thickness=12,
                ),
                hovertemplate="layer %{x}<br>position %{y}<br>" + key + " %{z:.3f}<br>%{customdata}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=[selection.layer],
                y=[labels[positions.index(selection.position)]],
                mode="markers",
                marker=dict(symbol="star", size=14, color="gold", line=dict(color="black", width=1)),
                name=f"chosen (layer {selection.layer}, position {selection.position})",
                showlegend=row == 1,
            ),
            row=row,
            col=1,
        )
        if cutoff < n_layers:
            label = dict(annotation_text=f"pruned (last {settings.prune_layer_fraction:.0%})", annotation_position="top left")
            fig.add_vrect(
                x0=cutoff - 0.5,
                x1=n_layers - 0.5,
                fillcolor="#888888",
                opacity=0.18,
                line_width=0,
                row=row,
                col=1,
                **(label if row == 1 else {}),
            )
        fig.update_xaxes(
            title_text="layer" if row == rows else None,
            range=[-0.5, n_layers - 0.5],
            dtick=1 if n_layers <= 32 else None,
            row=row,
            col=1,
        )
        fig.update_yaxes(title_text="position (token)", row=row, col=1)
    fig.update_layout(
        title=f"Candidate refusal directions: {sum(s.evaluated for s in selection.scores)} fully scored, "
        f"chosen layer {selection.layer}, position {selection.position}",
        template="plotly_white",
        height=260 * rows + 120,
        autosize=True,
        legend=dict(orientation="h", yanchor="bottom", y=1.02 + 0.1 / rows, xanchor="right", x=1),
        margin=dict(r=140),
    )
    return fig


def condition_bars(rates: Mapping[str, Rate | float], scores: Mapping[str, float | None]) -> go.Figure:
    """Refusal rate per condition (with k/n and the 95% Wilson interval when given Rate objects)
    and the mean refusal score per condition."""

    names = list(rates)
    colors = [condition_color(n) for n in names]
    values = [r.value if isinstance(r, Rate) else float(r) for r in rates.values()]
    counted = [r for r in rates.values() if isinstance(r, Rate)]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[
            "refusal rate" + (" (k/n; bars: 95% Wilson interval)" if counted else ""),
            "mean refusal score (log-odds of the refusal tokens)",
        ],
    )
    error, labels = None, list(names)
    if len(counted) == len(names):
        error = interval_error_bars([r.to_dict() for r in counted])
        # k/n under each condition's name: above the bar the error bar would cross it.
        labels = [f"{n}<br>{r.k}/{r.n}" for n, r in zip(names, counted)]
    fig.add_trace(
        go.Bar(x=labels, y=values, marker_color=colors, showlegend=False, error_y=error),
        row=1,
        col=1,
    )
    fig.add_trace(go.Bar(x=labels, y=[scores.get(n) for n in names], marker_color=colors, showlegend=False), row=1, col=2)
    fig.update_yaxes(range=[0, 1.15], title_text="share of replies judged refusals", row=1, col=1)
    fig.update_yaxes(title_text="refusal score", row=1, col=2)
    fig.update_layout(title="Refusal under each intervention", height=450, width=1100)
    return fig


def cosine_across_layers(candidates: CandidateDirections, selection: SelectionResult) -> go.Figure:
    """Cosine similarity of the chosen direction with every candidate, per position, across layers."""

    chosen = selection.direction.float()
    fig = go.Figure()
    for i, position in enumerate(candidates.positions):
        sims = torch.nn.functional.cosine_similarity(candidates.directions[i].float(), chosen.unsqueeze(0), dim=-1)
        fig.add_trace(
            go.Scatter(x=list(range(candidates.n_layers)), y=sims.tolist(), mode="lines+markers", name=f"position {position}")
        )
    fig.add_vline(x=selection.layer, line_dash="dot", annotation_text="chosen layer")
    fig.update_layout(
        title="Cosine similarity of the chosen direction with the candidates of every layer",
        xaxis_title="layer",
        yaxis_title="cosine similarity",
        yaxis_range=[-0.2, 1.05],
        height=450,
        width=900,
    )
    return fig
