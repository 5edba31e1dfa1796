"""Plotly figures of the category analysis, in mechref's shared visual language (diverging
red-blue for cosines, reds for refusal shares, the edit palette for conditions, 95% intervals as
error bars and k/n in every cell)."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechref.report.palette import EDIT_COLORS, OTHER
from mechref.report.plotting import interval_error_bars

# baseline, the single global direction, the k-dimensional subspace, a category's own direction
CONDITION_COLORS = {"baseline": EDIT_COLORS["original"], "global": EDIT_COLORS["ablation"], "subspace": EDIT_COLORS["actadd"]}


def condition_color(name: str) -> str:
    """The colour of a condition, by the category or kind its name starts with."""
    return CONDITION_COLORS.get(name.split("_")[0], OTHER)


def _heatmap(z, text, x, y, title, *, zmin, zmax, colorscale, xtitle, ytitle, ztitle, hover) -> go.Figure:
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=x,
            y=y,
            text=text,
            texttemplate="%{text}",
            zmin=zmin,
            zmax=zmax,
            colorscale=colorscale,
            colorbar=dict(title=dict(text=ztitle, side="right")),
            hovertemplate=f"{ytitle} %{{y}}<br>{xtitle} %{{x}}<br>{hover}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title=xtitle,
        yaxis_title=ytitle,
        height=220 + 34 * len(y),
        width=320 + 70 * len(x),
        yaxis_autorange="reversed",
        xaxis_tickangle=-40,
        margin=dict(t=110),
    )
    return fig


def cosine_heatmap(matrix: Sequence[Sequence[float]], names: Sequence[str], layer: int) -> go.Figure:
    """Cosines of the category directions (and the global one), rows in clustering order."""
    return _heatmap(
        [list(row) for row in matrix],
        [[f"{v:.2f}" for v in row] for row in matrix],
        list(names),
        list(names),
        f"Cosine similarity of the categories' refusal directions (layer {layer})<br>"
        "<sup>difference in means of each category's fit prompts minus harmless; ordered by average-linkage clustering</sup>",
        zmin=-1,
        zmax=1,
        colorscale="RdBu_r",
        xtitle="category",
        ytitle="category",
        ztitle="cosine",
        hover="cosine %{z:.3f}",
    )


def transfer_heatmap(cells: Sequence[Sequence[dict]], sources: Sequence[str], targets: Sequence[str], title: str) -> go.Figure:
    """Share of each target category's prompts refused (rows: the direction ablated); each cell a
    ``Rate.to_dict()`` shown as its rate and k/n, its interval on hover."""
    z = [[c["rate"] for c in row] for row in cells]
    text = [[f"{c['rate']:.2f}<br>{c['k']}/{c['n']}" for c in row] for row in cells]
    fig = _heatmap(
        z,
        text,
        list(targets),
        list(sources),
        title,
        zmin=0,
        zmax=1,
        colorscale="Reds",
        xtitle="target category (its evaluation prompts)",
        ytitle="direction ablated",
        ztitle="share refused",
        hover="share refused %{z:.2f}",
    )
    fig.data[0].customdata = [[f"[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]" for c in row] for row in cells]
    fig.data[
        0
    ].hovertemplate = "direction ablated %{y}<br>target %{x}<br>share refused %{z:.2f}, 95% interval %{customdata}<extra></extra>"
    return fig


def category_rates(rates: dict[str, dict[str, dict]], conditions: Sequence[str], names: Sequence[str]) -> go.Figure:
    """Refusal rate by generation per category under each condition, with 95% intervals."""
    fig = go.Figure()
    for condition in conditions:
        cells = [rates[condition][name] for name in names]
        fig.add_trace(
            go.Bar(
                name=condition,
                x=list(names),
                y=[c["rate"] for c in cells],
                marker_color=condition_color(condition),
                error_y=interval_error_bars(cells),
                customdata=[f"{c['k']}/{c['n']}" for c in cells],
                hovertemplate=f"{condition}<br>%{{x}}: %{{y:.2f}} (%{{customdata}})<extra></extra>",
            )
        )
    fig.update_layout(
        title="Refusal of each category's evaluation prompts, greedy replies judged<br>"
        "<sup>baseline, the single global direction ablated, the k-dimensional category subspace ablated; "
        "bars: 95% Wilson intervals</sup>",
        barmode="group",
        yaxis_title="refusal rate",
        yaxis_range=[0, 1.05],
        xaxis_tickangle=-40,
        height=520,
        width=max(900, 70 * len(names) * max(1, len(conditions)) // 2),
        margin=dict(t=110),
    )
    return fig


def subspace_figure(subspace: dict) -> go.Figure:
    """Left: explained variance of the categories' principal components. Middle: the held-out
    harmful prompts' mean refusal score as the top-k subspace is ablated (k/n still refusing on
    hover). Right: next-token KL on held-out harmless prompts. Dashed: the single global direction."""
    ratio = subspace["explained_variance_ratio"]
    curve = subspace["k_ablation"]
    single = subspace["global_ablation"]
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            "explained variance<br>of the category directions",
            "mean refusal score of held-out<br>harmful prompts, ablated",
            "next-token KL on held-out<br>harmless prompts (side effect)",
        ),
        horizontal_spacing=0.09,
    )
    components = list(range(1, len(ratio) + 1))
    fig.add_trace(go.Bar(x=components, y=ratio, name="variance per component", marker_color="#777777"), 1, 1)
    cumulative = [sum(ratio[:i]) for i in components]
    fig.add_trace(go.Scatter(x=components, y=cumulative, name="cumulative", mode="lines+markers", line_color="black"), 1, 1)
    ks = [row["k"] for row in curve]
    score = [row["mean_refusal_score"] for row in curve]
    fig.add_trace(
        go.Scatter(
            x=ks,
            y=[c["mean"] for c in score],
            error_y=_mean_error_bars(score),
            mode="lines+markers",
            name="top-k subspace ablated",
            line_color=CONDITION_COLORS["subspace"],
            customdata=[f"{row['refusing']['k']}/{row['refusing']['n']}" for row in curve],
            hovertemplate="k=%{x}: mean score %{y:.2f}; still refusing (score > 0) %{customdata}<extra></extra>",
        ),
        1,
        2,
    )
    kl = [row["kl"] for row in curve]
    fig.add_trace(
        go.Scatter(
            x=ks,
            y=[c["mean"] for c in kl],
            error_y=_mean_error_bars(kl),
            mode="lines+markers",
            name="KL, top-k subspace",
            line_color=CONDITION_COLORS["subspace"],
            showlegend=False,
        ),
        1,
        3,
    )
    for col, value in ((2, single["mean_refusal_score"]["mean"]), (3, single["kl"]["mean"])):
        fig.add_trace(
            go.Scatter(
                x=[ks[0], ks[-1]],
                y=[value, value],
                mode="lines",
                line=dict(color=CONDITION_COLORS["global"], dash="dash"),
                name="single global direction ablated",
                showlegend=col == 2,
            ),
            1,
            col,
        )
    fig.update_xaxes(title_text="component", row=1, col=1)
    fig.update_xaxes(title_text="k (dimensions ablated)", dtick=1, row=1, col=2)
    fig.update_xaxes(title_text="k (dimensions ablated)", dtick=1, row=1, col=3)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="refusal score (log-odds)", row=1, col=2)
    fig.update_yaxes(title_text="KL (nats)", row=1, col=3)
    fig.update_layout(
        title="A refusal subspace: does ablating k > 1 directions remove more refusal, at what cost?",
        height=480,
        width=1300,
        margin=dict(t=120),
        legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
    )
    return fig


def _mean_error_bars(cells: Sequence[dict]) -> dict:
    return dict(
        type="data",
        symmetric=False,
        array=[(c["ci95"][1] - c["mean"]) if c.get("ci95") else 0 for c in cells],
        arrayminus=[(c["mean"] - c["ci95"][0]) if c.get("ci95") else 0 for c in cells],
        color="#444444",
    )
