"""Settings of the edit search.

>>> settings = OptimizeEditSettings()
>>> settings.n_trials, settings.timeout_minutes, settings.n_confirm_points
(40, 10.0, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mechref.framework.settings import Settings, SettingsError, option


@dataclass
class OptimizeEditSettings(Settings):
    """A multi-objective search over edits (direction layer, per-layer strengths of attention and MLP
    outputs) for the Pareto front of refusal against KL, confirmed by generation."""

    direction_run: Path = option(
        Path("runs/refusal_direction"),
        "refusal-direction run folder: its candidates, chosen direction and refusal tokens (computed there on first use)",
        metavar="DIR",
    )
    splits: Path | None = option(
        None,
        "refusal_direction splits folder: search on its val prompts, confirm on its test prompts (none: bundled prompts)",
        metavar="DIR",
    )
    n_search: int = option(32, "harmful and harmless val prompts scored per trial (cheap proxies)", minimum=2)
    n_confirm: int = option(32, "held-out harmful and harmless test prompts of each confirmation", minimum=2)
    n_trials: int = option(
        40, "trials of the search, the reference edit included (a resumed search counts its old ones)", minimum=2
    )
    timeout_minutes: float = option(10.0, "stop the search after this long even if trials remain", minimum=0.1)
    seed: int = option(42, "seed of Optuna's TPE sampler")
    layer_low: float = option(0.3, "earliest direction layer tried, as a fraction of the depth", minimum=0, maximum=1)
    layer_high: float = option(0.9, "latest direction layer tried, as a fraction of the depth", minimum=0, maximum=1)
    n_confirm_points: int = option(2, "points of the front confirmed by generation, beside the reference edit", minimum=1)
    max_new_tokens: int = option(128, "tokens generated per confirmation reply, stopping at EOS", minimum=1)
    judge: Literal["substring", "arditi"] = option("substring", "refusal judge of the confirmation replies")
    batch_size: int = option(32, "prompts per forward pass", minimum=1)
    export_model: Path | None = option(
        None, "write the chosen trade-off (the first confirmed point) as an edited transformers folder", metavar="DIR"
    )
    overwrite: bool = option(False, "let --export-model replace an earlier mechref export in that folder")
    resume: bool = option(True, "continue the search and reuse the stages already computed with the same settings")
    static: list[str] = option(
        ["png"], "static figure formats, written when kaleido and Chromium are present", nargs="*", metavar="FORMAT"
    )

    def validate(self) -> None:
        if self.layer_low >= self.layer_high:
            raise SettingsError(f"layer_low ({self.layer_low}) must be below layer_high ({self.layer_high})")
