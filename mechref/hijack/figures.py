"""Plotly figures of the suffix analysis."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from mechref.hijack.conditions import CONDITION_COLORS
from mechref.hijack.regions import REGIONS
from mechref.palette import REGION_COLORS, condition_dash


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def cosine_by_layer(cosines: dict[str, Tensor], direction_layer: int) -> go.Figure:
    """Mean (line) and standard deviation (band) of the last token's cosine with the refusal direction per layer."""

    fig = go.Figure()
    for name, values in cosines.items():
        values = values.double()
        mean, std = values.mean(0), values.std(0) if len(values) > 1 else torch.zeros(values.shape[1], dtype=torch.float64)
        layers = list(range(len(mean)))
        color = CONDITION_COLORS.get(name, "#009E73")
        fig.add_trace(
            go.Scatter(
                x=layers + layers[::-1],
                y=(mean + std).tolist() + (mean - std).tolist()[::-1],
                fill="toself",
                fillcolor=_rgba(color, 0.15),
                line=dict(width=0),
                hoverinfo="skip",
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=mean.tolist(),
                mode="lines+markers",
                name=f"{name} (n={len(values)})",
                line=dict(color=color, dash=condition_dash(name)),
                hovertemplate="layer %{x}<br>cosine %{y:.3f}<extra>" + name + "</extra>",
            )
        )
    fig.add_vline(x=direction_layer, line_dash="dash", line_color="grey", annotation_text="direction layer")
    fig.update_layout(
        title="Cosine similarity of the last token's residual stream with the refusal direction (mean ± sd)",
        xaxis_title="layer (residual stream entering it)",
        yaxis_title="cosine similarity",
        height=480,
        width=980,
    )
    return fig


def head_attribution_heatmaps(head_attribution: dict[str, Tensor], top_heads: Sequence[tuple[int, int]] = ()) -> go.Figure:
    """Mean direct feature attribution of every head (layer x head), one panel per condition."""

    names = list(head_attribution)
    means = {n: head_attribution[n].double().mean(0) for n in names}  # [layer, head]
    bound = max(float(m.abs().max()) for m in means.values()) or 1.0
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True, horizontal_spacing=0.03)
    for col, name in enumerate(names, start=1):
        m = means[name]
        fig.add_trace(
            go.Heatmap(
                z=m.T.tolist(),
                x=list(range(m.shape[0])),
                y=list(range(m.shape[1])),
                colorscale="RdBu_r",
                zmin=-bound,
                zmax=bound,
                showscale=col == len(names),
                hovertemplate="layer %{x} head %{y}<br>DFA %{z:.3f}<extra>" + name + "</extra>",
            ),
            row=1,
            col=col,
        )
        if top_heads:
            fig.add_trace(
                go.Scatter(
                    x=[l for l, _ in top_heads],
                    y=[h for _, h in top_heads],
                    mode="markers",
                    marker=dict(symbol="circle-open", size=10, color="black"),
                    name="top heads",
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="layer", row=1, col=col)
    fig.update_yaxes(title_text="head", row=1, col=1)
    fig.update_layout(
        title="Direct feature attribution of each attention head to the refusal direction (last token)",
        height=460,
        width=360 * len(names),
    )
    return fig


def top_head_attribution(
    head_attribution: dict[str, Tensor], mlp_attribution: dict[str, Tensor], top_heads: Sequence[tuple[int, int]]
) -> go.Figure:
    """Top heads' attribution per condition (bars) and every MLP's attribution per layer (lines)."""

    labels = [f"L{l}H{h}" for l, h in top_heads]
    fig = make_subplots(
        rows=1, cols=2, column_widths=[0.55, 0.45], subplot_titles=["top heads (chosen on the plain harmful prompts)", "MLPs"]
    )
    for name, values in head_attribution.items():
        v = values.double()
        means = [float(v[:, l, h].mean()) for l, h in top_heads]
        sds = [float(v[:, l, h].std()) if len(v) > 1 else 0.0 for l, h in top_heads]
        fig.add_trace(
            go.Bar(
                x=labels, y=means, error_y=dict(array=sds), name=name, legendgroup=name, marker_color=CONDITION_COLORS.get(name)
            ),
            row=1,
            col=1,
        )
        mlp = mlp_attribution[name].double().mean(0)
        fig.add_trace(
            go.Scatter(
                x=list(range(len(mlp))),
                y=mlp.tolist(),
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=False,
                line=dict(color=CONDITION_COLORS.get(name)),
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="head", row=1, col=1)
    fig.update_xaxes(title_text="layer", row=1, col=2)
    fig.update_yaxes(title_text="contribution to the refusal direction", row=1, col=1)
    fig.update_layout(
        barmode="group", title="Direct feature attribution to the refusal direction, per condition", height=480, width=1300
    )
    return fig


def attention_share_bars(shares: dict[str, Tensor], top_heads: Sequence[tuple[int, int]]) -> go.Figure:
    """Stacked shares of the last token's attention on each region, one panel per top head."""

    names = list(shares)
    cols = min(4, len(top_heads))
    rows = -(-len(top_heads) // cols)
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=[f"L{l}H{h}" for l, h in top_heads], shared_yaxes=True, vertical_spacing=0.18
    )
    for i, _head in enumerate(top_heads):
        row, col = i // cols + 1, i % cols + 1
        for r, region in enumerate(REGIONS):
            y = [float(shares[n][:, i, r].mean()) for n in names]
            fig.add_trace(
                go.Bar(
                    x=[n.replace("harmful+", "+") for n in names],
                    y=y,
                    name=region,
                    legendgroup=region,
                    marker_color=REGION_COLORS[region],
                    showlegend=i == 0,
                    hovertemplate="%{x}<br>" + region + " %{y:.2f}<extra></extra>",
                ),
                row=row,
                col=col,
            )
    fig.update_layout(
        barmode="stack",
        height=330 * rows + 80,
        width=1300,
        title="Where the top heads look from the last token: share of attention per prompt region",
    )
    fig.update_yaxes(range=[0, 1])
    return fig


def refusal_bars(rates: dict[str, float], n: dict[str, int]) -> go.Figure:
    """Refusal rate of the greedy replies per condition."""

    names = list(rates)
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[rates[k] for k in names],
            marker_color=[CONDITION_COLORS.get(k) for k in names],
            text=[f"{rates[k]:.2f} (n={n[k]})" for k in names],
            textposition="outside",
        )
    )
    fig.update_layout(
        title="Refusal rate of the greedy replies", yaxis_range=[0, 1.1], yaxis_title="refusal rate", height=420, width=800
    )
    return fig
