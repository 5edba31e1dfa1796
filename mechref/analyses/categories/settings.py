"""Settings of the per-category refusal analysis.

>>> settings = CategoriesSettings()
>>> settings.min_prompts, settings.n_components, settings.max_new_tokens
(8, 4, 128)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mechref.framework.checks import check_token_ids
from mechref.framework.settings import Settings, SettingsError, option


@dataclass
class CategoriesSettings(Settings):
    """Data, direction, subspace size, generation sample and judging of a category study."""

    harmful: Path | None = option(
        None, 'JSON list of harmful prompts with a "category" field (none: the bundled English set)', metavar="PATH"
    )
    data: Path | None = option(
        None,
        "a refusal_direction splits folder: its harmful prompts that carry a category, its harmless train (mean) "
        "and val (KL) prompts",
        metavar="DIR",
    )
    harmless: Path | None = option(
        None, "JSON list of harmless prompts (first half: the shared mean; second half: KL); none: bundled", metavar="PATH"
    )
    categories: list[str] | None = option(
        None, "study only these categories (their names in the data; none: all)", metavar="NAME"
    )
    min_prompts: int = option(
        8, "categories with fewer prompts are merged into 'other' (half make the direction, half measure it)", minimum=4
    )
    max_per_category: int | None = option(16, "at most this many prompts per category (none: all)", minimum=4)
    n_harmless: int | None = option(
        256,
        "harmless prompts for the shared mean, at most (the bundled set has 128; the splits' train set 18,793); none: all",
        minimum=2,
    )
    n_kl: int = option(32, "harmless prompts for the next-token KL of each ablation", minimum=2)
    seed: int = option(42, "shuffling seed of each category's fit/eval halves")
    direction: Path | None = option(
        None,
        "direction.safetensors of the refusal-direction analysis (or its folder): the global direction, its layer and position",
        metavar="FILE",
    )
    direction_run: Path = option(
        Path("runs/refusal_direction"), "refusal-direction run folder, used or computed there on first use", metavar="DIR"
    )
    layer: int | None = option(None, "override the layer of the category directions", minimum=0)
    refusal_tokens: list[int] | None = option(
        None,
        "token ids of refusal openings for the logit score (none: the direction run's, or derived)",
        metavar="ID",
    )
    n_components: int = option(4, "largest refusal subspace ablated (k = 1 … this)", minimum=1)
    n_generate: int = option(3, "evaluation prompts per category given greedy replies", minimum=1)
    generation_sources: int = option(
        1, "category directions whose ablation is also checked by generation (the largest categories)", minimum=0
    )
    max_new_tokens: int = option(
        128, "tokens generated per reply, stopping at EOS (refusals often follow a compliant-looking opening)", minimum=1
    )
    judge: Literal["substring", "arditi", "chat-model", "probe"] = option(
        "probe",
        "refusal judge of the replies: the probe (English, validated on XSTest), mechref's phrases, Arditi et al.'s 12, "
        "or the model asked",
    )
    batch_size: int = option(32, "prompts per forward pass", minimum=1)
    generation_batch_size: int = option(64, "prompts per generation batch (each reply leaves the batch when it ends)", minimum=1)
    resume: bool = option(True, "reuse the stages already computed in the output folder with the same settings")
    static: list[str] = option(
        ["png"], "static figure formats, written when kaleido and Chromium are present", nargs="*", metavar="FORMAT"
    )

    def validate(self) -> None:
        if self.judge == "probe":
            from mechref.judges.probe import check_probe_usable

            check_probe_usable()
        if self.harmful is not None and self.data is not None:
            raise SettingsError("give --harmful or --data, not both")
        if self.refusal_tokens is not None and not self.refusal_tokens:
            raise SettingsError("refusal_tokens is empty: give at least one token id, or none to use the direction run's")
        if self.refusal_tokens:
            check_token_ids(self.refusal_tokens)
