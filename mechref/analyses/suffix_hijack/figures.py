"""Plotly figures of the suffix analysis."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from mechref.analyses.suffix_hijack.conditions import CONDITION_COLORS
from mechref.analyses.suffix_hijack.regions import REGIONS
from mechref.report.palette import REGION_COLORS, condition_dash


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


def head_attribution_heatmaps(
    head_attribution: dict[str, Tensor],
    top_heads: Sequence[tuple[int, int]] = (),
    plain: str = "harmful",
    suffixed: Sequence[str] = ("harmful+adv_suffix", "harmful+random_suffix"),
) -> go.Figure:
    """Mean direct feature attribution of every head (layer x head), one panel per condition; a
    second row shows each suffix condition minus the plain prompts (``plain``), the heads a suffix
    switches off (blue) or on (red), with the random suffix as the control beside the adversarial one.
    """

    names = list(head_attribution)
    means = {n: head_attribution[n].double().mean(0) for n in names}  # [layer, head]
    # Short panel titles: the panels are narrow. "adv_suffix − plain", "random_suffix − plain".
    differences = {
        f"{n.replace(plain + '+', '')} − plain": means[n] - means[plain] for n in suffixed if n in means and plain in means
    }
    bound = max(float(m.abs().max()) for m in means.values()) or 1.0
    difference_bound = max((float(d.abs().max()) for d in differences.values()), default=0.0) or 1.0
    cols, rows = len(names), 2 if differences else 1
    titles = names + list(differences) + [""] * (cols - len(differences)) * (rows - 1)
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.03, vertical_spacing=0.16
    )
    panels = [(1, col, name, means[name], bound) for col, name in enumerate(names, start=1)]
    panels += [(2, col, name, d, difference_bound) for col, (name, d) in enumerate(differences.items(), start=1)]
    for row, col, name, values, scale in panels:
        # One colour bar per row: the conditions share a scale, the differences share theirs.
        first_in_row = col == 1
        colorbar = dict(
            title=dict(text="DFA" if row == 1 else "Δ DFA", side="right"),
            len=0.4,
            y=0.79 if rows == 2 and row == 1 else (0.21 if row == 2 else 0.5),
        )
        fig.add_trace(
            go.Heatmap(
                z=values.T.tolist(),
                x=list(range(values.shape[0])),
                y=list(range(values.shape[1])),
                colorscale="RdBu_r",
                zmin=-scale,
                zmax=scale,
                showscale=first_in_row,
                colorbar=colorbar,
                hovertemplate="layer %{x} head %{y}<br>%{z:.3f}<extra>" + name + "</extra>",
            ),
            row=row,
            col=col,
        )
        if top_heads:
            fig.add_trace(
                go.Scatter(
                    x=[l for l, _ in top_heads],
                    y=[h for _, h in top_heads],
                    mode="markers",
                    marker=dict(symbol="circle-open", size=10, color="black"),
                    name="top heads (plain harmful)",
                    showlegend=row == 1 and col == 1,
                    hoverinfo="skip",
                ),
                row=row,
                col=col,
            )
        fig.update_xaxes(title_text="layer", row=row, col=col)
    for row in range(1, rows + 1):
        fig.update_yaxes(title_text="head", row=row, col=1)
    fig.update_layout(
        title="Direct feature attribution of each attention head to the refusal direction (last token; "
        "bottom: change a suffix makes)",
        height=420 * rows + 40,
        width=max(300 * cols, 900),
        legend=dict(orientation="h", y=-0.08),
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


def share_shift(shares: Tensor, reference: Tensor) -> Tensor:
    """Per head, the total variation distance between two conditions' mean attention over regions:
    half the summed absolute change of the shares, 0 (same) to 1 (disjoint).

    >>> a = torch.tensor([[[0.5, 0.5, 0.0, 0.0]]])  # [prompt, head, region]
    >>> b = torch.tensor([[[0.1, 0.5, 0.4, 0.0]]])
    >>> share_shift(b, a)
    tensor([0.4000], dtype=torch.float64)
    """
    return 0.5 * (shares.double().mean(0) - reference.double().mean(0)).abs().sum(-1)


def attention_share_bars(
    shares: dict[str, Tensor],
    top_heads: Sequence[tuple[int, int]],
    plain: str = "harmful",
    adversarial: str = "harmful+adv_suffix",
    control: str = "harmful+random_suffix",
    min_shift: float = 0.2,
) -> go.Figure:
    """Where the top heads look from the last token.

    The top panel gives, for every top head, how far the adversarial suffix moves its attention from
    the plain prompts and from the random-suffix control, and how far the control itself moves it
    (:func:`share_shift`). Below, stacked shares of attention per prompt region for the heads the
    adversarial suffix moves by at least ``min_shift`` from both, the plain prompts and the control;
    the others are named in the top panel's title.
    """

    names = list(shares)
    labels = [f"L{l}H{h}" for l, h in top_heads]
    pairs = [(a, b) for a, b in ((adversarial, plain), (control, plain), (adversarial, control)) if a in shares and b in shares]
    shifts = {pair: share_shift(shares[pair[0]], shares[pair[1]]) for pair in pairs}
    tested = [pair for pair in pairs if pair[0] == adversarial]
    keep = [i for i in range(len(top_heads)) if all(float(shifts[pair][i]) >= min_shift for pair in tested)]
    if not tested:  # no adversarial condition to compare: every head
        keep = list(range(len(top_heads)))
    left_out = [labels[i] for i in range(len(top_heads)) if i not in keep]
    cols = max(1, min(4, len(keep)))
    share_rows = -(-len(keep) // cols)
    top_title = (
        f"attention moved (total variation of the region shares); below: heads the adversarial suffix moves ≥ {min_shift:g}"
    )
    if left_out:
        top_title += f" from both<br>(not shown below: {', '.join(left_out)})"
    specs = [[{"colspan": cols}] + [None] * (cols - 1)] + [[{}] * cols for _ in range(share_rows)]
    fig = make_subplots(
        rows=1 + share_rows,
        cols=cols,
        specs=specs,
        subplot_titles=[top_title] + [labels[i] for i in keep],  # one per panel, not per cell
        vertical_spacing=0.12 if share_rows > 1 else 0.2,
        row_heights=[0.8] + [1.0] * share_rows,
    )
    short = {plain: "plain", adversarial: "adversarial suffix", control: "random suffix"}
    symbols = {(adversarial, plain): "circle", (control, plain): "diamond-open", (adversarial, control): "circle-open"}
    for pair in pairs:
        # Dots, not bars: the panels below stack their bars, and a dot plot needs no grouping.
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=shifts[pair].tolist(),
                mode="markers",
                name=f"{short[pair[0]]} vs {short[pair[1]]}",
                marker=dict(color=CONDITION_COLORS.get(pair[0]), size=12, symbol=symbols[pair], line=dict(width=2)),
                hovertemplate="%{x}<br>total variation %{y:.2f}<extra>" + f"{pair[0]} vs {pair[1]}" + "</extra>",
            ),
            row=1,
            col=1,
        )
    fig.add_hline(y=min_shift, line_dash="dot", line_color="grey", row=1, col=1)
    fig.update_yaxes(title_text="shift (0-1)", rangemode="tozero", row=1, col=1)
    for k, i in enumerate(keep):
        row, col = k // cols + 2, k % cols + 1
        for r, region in enumerate(REGIONS):
            fig.add_trace(
                go.Bar(
                    x=[n.replace("harmful+", "+") for n in names],
                    y=[float(shares[n][:, i, r].mean()) for n in names],
                    name=region,
                    legendgroup=region,
                    marker_color=REGION_COLORS[region],
                    showlegend=k == 0,
                    hovertemplate="%{x}<br>" + region + " %{y:.2f}<extra></extra>",
                ),
                row=row,
                col=col,
            )
        fig.update_yaxes(range=[0, 1], title_text="share of attention" if col == 1 else None, row=row, col=col)
    fig.update_layout(
        barmode="stack",
        height=300 * share_rows + 340,
        width=1200,
        title="Where the top heads look from the last token: share of attention per prompt region (mean over prompts)",
    )
    return fig
