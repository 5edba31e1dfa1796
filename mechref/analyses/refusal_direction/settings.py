"""Settings of the refusal-direction analysis (defaults follow Arditi et al. 2024).

>>> settings = RefusalDirectionSettings(n_test=20, selection="exhaustive")
>>> settings.n_train, settings.selection_settings().mode
(128, 'exhaustive')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mechref.analyses.refusal_direction.selection import SelectionSettings
from mechref.framework.checks import check_token_ids
from mechref.framework.settings import Settings, SettingsError, option


@dataclass
class RefusalDirectionSettings(Settings):
    """What the refusal-direction analysis reads, how it selects, evaluates and exports."""

    # data (default: the bundled English prompts)
    splits: Path | None = option(
        None, "folder with {harmful,harmless}_{train,val,test}.json (the refusal_direction layout)", metavar="DIR"
    )
    harmful_train: Path | None = option(None, "JSON file of harmful train prompts", metavar="PATH")
    harmful_val: Path | None = option(None, "JSON file of harmful validation prompts", metavar="PATH")
    harmful_test: Path | None = option(None, "JSON file of harmful test prompts", metavar="PATH")
    harmless_train: Path | None = option(None, "JSON file of harmless train prompts", metavar="PATH")
    harmless_val: Path | None = option(None, "JSON file of harmless validation prompts", metavar="PATH")
    harmless_test: Path | None = option(None, "JSON file of harmless test prompts", metavar="PATH")
    n_train: int = option(128, "training prompts per class", minimum=1)
    n_val: int = option(32, "validation prompts per class", minimum=1)
    n_test: int | None = option(None, "first N test prompts per class (none: all)", minimum=1)
    seed: int = option(42, "sampling seed (42, as the paper)")
    filter: bool = option(True, "the paper's refusal-score filter of train/val prompts")
    # selection
    selection: Literal["fast", "exhaustive", "cosmic", "auto"] = option(
        "fast",
        "fast: proxy ranking, then full scores for the top few; exhaustive: score every candidate; cosmic: choose by "
        "activation cosines alone (no refusal tokens, no generation), then score the chosen one; auto: fast, falling "
        "back to cosmic where the filters leave no candidate (a weakly refusing model), saying so",
    )
    kl_threshold: float = option(0.1, "discard candidates whose KL on harmless prompts exceeds this", minimum=0)
    induce_threshold: float = option(0.0, "discard candidates whose induce score is at most this")
    prune_layer_fraction: float = option(0.2, "discard candidates in this last fraction of layers", minimum=0, maximum=0.95)
    top_k: int = option(8, "fast mode: candidates given full scores per round", minimum=1)
    cosmic_prompts: int = option(16, "cosmic mode: validation prompts per class whose activations are compared", minimum=1)
    cosmic_layer_fraction: float = option(
        0.1, "cosmic mode: share of layers (least alike harmful vs harmless) where cosines are read", minimum=0.01, maximum=1
    )
    proxy_prompts: int = option(8, "fast mode: harmful validation prompts for the proxy", minimum=1)
    refusal_tokens: list[int] | None = option(
        None, "token ids of refusal openings (none: derived from the model's own refusals)", metavar="ID"
    )
    # evaluation
    max_new_tokens: int = option(
        128, "tokens generated per reply, stopping at EOS (refusals often follow a compliant-looking opening)", minimum=1
    )
    judge: Literal["substring", "arditi", "chat-model", "probe"] = option(
        "probe",
        "refusal judge: the probe (English: the embedded model reads each reply after a fixed request; the judge "
        "validated on XSTest's human labels: docs/results/judges.md), mechref's phrase list, Arditi et al.'s 12 phrases, or the "
        "model itself asked whether a reply refuses",
    )
    skip_eval: bool = option(False, "stop after selection")
    # output
    export_model: Path | None = option(
        None, "save the orthogonalized model as a Hugging Face folder here (a new or empty folder)", metavar="DIR"
    )
    overwrite: bool = option(False, "let --export-model replace an earlier mechref export in that folder")
    batch_size: int = option(32, "prompts per forward pass", minimum=1)
    generation_batch_size: int = option(
        128, "prompts per generation batch in the evaluation (each reply leaves the batch when it ends)", minimum=1
    )
    resume: bool = option(True, "reuse the stages already computed in the output folder with the same settings")
    static: list[str] = option(
        ["png"], "static figure formats, written when kaleido and Chromium are present", nargs="*", metavar="FORMAT"
    )

    def validate(self) -> None:
        if self.judge == "probe":
            from mechref.judges.probe import check_probe_usable

            check_probe_usable()
        if self.refusal_tokens is not None and not self.refusal_tokens:
            raise SettingsError("refusal_tokens is empty: give at least one token id, or none to derive them")
        if self.refusal_tokens:
            check_token_ids(self.refusal_tokens)

    def selection_settings(self) -> SelectionSettings:
        """The selection part of these settings, as :func:`select_direction` takes it."""
        return SelectionSettings(
            mode=self.selection,
            kl_threshold=self.kl_threshold,
            induce_threshold=self.induce_threshold,
            prune_layer_fraction=self.prune_layer_fraction,
            proxy_prompts=self.proxy_prompts,
            top_k=self.top_k,
            batch_size=self.batch_size,
            cosmic_prompts=self.cosmic_prompts,
            cosmic_layer_fraction=self.cosmic_layer_fraction,
        )


# A cheaper selection for a direction computed on first use by another analysis: half the proxy
# prompts and half the fully scored candidates (about 2 minutes less on a 2-core CPU). Run the
# refusal-direction analysis yourself for the full selection.
#: The settings of a direction computed on first use by another analysis (a cheaper selection).
FIRST_USE = RefusalDirectionSettings(skip_eval=True, proxy_prompts=4, top_k=4)
