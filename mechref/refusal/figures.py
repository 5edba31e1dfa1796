"""Plotly figures of the refusal-direction analysis."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from mechref.refusal.candidates import CandidateDirections
from mechref.refusal.selection import SelectionResult


def score_heatmaps(selection: SelectionResult, n_layers: int, token_labels: Sequence[str] | None = None) -> go.Figure:
    """Bypass, induce and KL over (position, layer), the chosen candidate marked with a star.

    Candidates the fast search did not score are left blank.
    """

    positions = sorted({s.position for s in selection.scores})
    labels = [f"{p} {token_labels[i]!r}" if token_labels else str(p) for i, p in enumerate(positions)]
    metrics = [
        ("bypass", "bypass score (harmful, ablated)"),
        ("induce", "induce score (harmless, added)"),
        ("kl", "KL (harmless, ablated)"),
    ]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[title for _, title in metrics], horizontal_spacing=0.08)
    for col, (key, _title) in enumerate(metrics, start=1):
        z = [[math.nan] * n_layers for _ in positions]
        for s in selection.scores:
            value = getattr(s, key)
            if value is not None:
                z[positions.index(s.position)][s.layer] = value
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=list(range(n_layers)),
                y=labels,
                colorscale="RdBu_r" if key != "kl" else "Viridis",
                zmid=0 if key != "kl" else None,
                colorbar=dict(x=0.29 + 0.36 * (col - 1), len=0.9, thickness=10),
                hovertemplate="layer %{x}<br>position %{y}<br>" + key + " %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=[selection.layer],
                y=[labels[positions.index(selection.position)]],
                mode="markers",
                marker=dict(symbol="star", size=16, color="gold", line=dict(color="black", width=1)),
                name="chosen",
                showlegend=col == 1,
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="layer", row=1, col=col)
    fig.update_yaxes(title_text="position", row=1, col=1)
    fig.update_layout(
        title=f"Candidate refusal directions: chosen layer {selection.layer}, position {selection.position}",
        height=420,
        width=1400,
    )
    return fig


def condition_bars(rates: Mapping[str, float], scores: Mapping[str, float | None]) -> go.Figure:
    """Refusal rate (substring judge) and mean refusal score per condition."""

    names = list(rates)
    colors = ["#c0392b" if n.startswith("harmful") else "#2980b9" for n in names]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["refusal rate (substring judge)", "mean refusal score"])
    fig.add_trace(
        go.Bar(
            x=names,
            y=[rates[n] for n in names],
            marker_color=colors,
            showlegend=False,
            text=[f"{rates[n]:.2f}" for n in names],
            textposition="outside",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(go.Bar(x=names, y=[scores.get(n) for n in names], marker_color=colors, showlegend=False), row=1, col=2)
    fig.update_yaxes(range=[0, 1.1], row=1, col=1)
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
