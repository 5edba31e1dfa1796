"""Settings of the multilingual analysis (Wang et al. 2025): every part (``--parts``: audit,
cosine, transfer, silhouette, repair) shares them, and one output folder.

>>> MultilingualSettings(languages=["en", "de"]).n_train
48
>>> MultilingualSettings(refusal_tokens=["de=40,7"]).token_overrides()
{'de': [40, 7]}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mechref.framework.settings import Settings, SettingsError, option

#: The parts of the analysis ``--parts`` chooses from, in the order they run.
PARTS = ("audit", "cosine", "transfer", "silhouette", "repair")
#: The parts run when ``--parts`` is not given (``repair`` generates for every coefficient: asked for by name).
DEFAULT_PARTS = ("audit", "cosine", "transfer", "silhouette")
#: Why a part cannot run on harmful prompts only (``--harmful-only``): each needs harmless prompts in every language.
NEEDS_HARMLESS = {
    "cosine": "a language's refusal vector is the mean of its harmful prompts minus that of its harmless ones",
    "silhouette": "it measures how harmful and harmless prompts separate",
    "repair": "it measures whether the added vector makes the model refuse harmless prompts too",
}


@dataclass
class MultilingualSettings(Settings):
    """Languages, data, direction and judging of a multilingual study."""

    languages: list[str] | None = option(
        None, "language codes, BCP-47 (none: every language of the data; the bundled set's eight)", metavar="LANG"
    )
    data: Path | None = option(
        None,
        "prompts: a CSV or JSON table with label, split and a column per language; a folder with a folder per language "
        "({harmful,harmless}_{train,test}.json); or a PolyRefuse folder (none: the bundled multilingual set)",
        metavar="PATH",
    )
    harmless_data: Path | None = option(
        None,
        "harmless prompts from another source (a table or a folder per language), for --data with harmful prompts only",
        metavar="PATH",
    )
    harmful_only: bool = option(
        False,
        "--data has harmful prompts only and no harmless source: run the parts that need none (the audit of harmful "
        "prompts; transfer: refusal with the refusal direction ablated), noting what is missing",
    )
    n_train: int = option(48, "train prompts per class and language", minimum=1)
    n_test: int = option(16, "test prompts per class and language", minimum=1)
    seed: int = option(42, "sampling seed of the train prompts")
    direction: Path | None = option(
        None,
        "direction.safetensors from the refusal-direction analysis (or its folder); "
        "its layer and position are used for every language",
        metavar="FILE",
    )
    direction_run: Path = option(
        Path("runs/refusal_direction"), "refusal-direction run folder, used or computed there on first use", metavar="DIR"
    )
    layer: int | None = option(None, "override the layer of the refusal direction", minimum=0)
    judge: Literal["auto", "substring", "probe", "mined", "chat-model"] = option(
        "auto",
        "refusal judge: auto (per language, the phrase list or the probe, whichever has the better passing "
        "hand-labelled check on this model's replies, else refusal openings mined from its own replies); each "
        "language's phrase list; the probe (fitted on English, read by the embedded model); mined openings for every "
        "language (any language, no list needed); or the model asked whether a reply refuses",
    )
    n_mine: int = option(
        16, "mined judge: replies to this many train prompts per class and language are mined (not the test prompts)", minimum=2
    )
    refusal_tokens: list[str] = option([], "override the refusal tokens of a language, e.g. de=40,19238", metavar="LANG=ID,ID")
    max_new_tokens: int = option(
        128, "tokens generated per reply, stopping at EOS (refusals often follow a compliant-looking opening)", minimum=1
    )
    parts: list[str] = option(
        list(DEFAULT_PARTS),
        f"which parts to run on the output folder (any of {', '.join(PARTS)}; repair only when named)",
        nargs="+",
        metavar="PART",
    )
    repair_languages: int = option(
        2, "repair: the languages with the least harmful refusal in the audit that get the source's vector added", minimum=1
    )
    repair_coefficients: list[float] = option(
        [0.5, 1.0], "repair: multiples of the source language's refusal vector added in the weak languages", nargs="+"
    )
    audit: bool = option(True, "generate and judge replies (silhouette: without them the PCA marks no jailbroken prompts)")
    batch_size: int = option(32, "prompts per forward pass", minimum=1)
    resume: bool = option(True, "reuse the stages already computed in the output folder with the same settings")
    static: list[str] = option(
        ["png"], "static figure formats, written when kaleido and Chromium are present", nargs="*", metavar="FORMAT"
    )

    def validate(self) -> None:
        if self.languages is not None and (not self.languages or len(set(self.languages)) != len(self.languages)):
            raise SettingsError(f"languages must be distinct language codes, got {self.languages}")
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise SettingsError(f"unknown parts {unknown or self.parts}; choose from {', '.join(PARTS)}")
        self.token_overrides()
        if self.judge == "probe":
            from mechref.judges.probe import check_probe_usable

            check_probe_usable()
        if "repair" in self.parts and not self.audit:
            raise SettingsError("repair compares with the audit's replies: run it with the audit (drop --no-audit)")
        if not self.repair_coefficients or any(c <= 0 for c in self.repair_coefficients):
            raise SettingsError(f"--repair-coefficients must be positive multiples, got {self.repair_coefficients}")
        if self.harmful_only:
            if self.data is None or self.harmless_data is not None:
                raise SettingsError(
                    "--harmful-only is for a user's --data without harmless prompts; with --harmless-data every part runs, "
                    "and the bundled set and PolyRefuse have harmless prompts"
                    if self.harmless_data is not None
                    else "--harmful-only reads the user's harmful prompts: give --data (a table or a folder per language)"
                )
            asked = [p for p in self.parts if p in NEEDS_HARMLESS and list(self.parts) != list(DEFAULT_PARTS)]
            if asked:
                raise SettingsError(
                    f"--parts {asked[0]} needs harmless prompts ({NEEDS_HARMLESS[asked[0]]}); give --harmless-data "
                    "with harmless prompts in these languages, or leave it out"
                )

    def run_parts(self) -> list[str]:
        """The parts that run: ``parts``, less those that need harmless prompts when ``harmful_only`` (the
        default parts only: asking for one by name is refused in :meth:`validate`).

        >>> MultilingualSettings(data=Path("x.csv"), harmful_only=True).run_parts()
        ['audit', 'transfer']
        """
        return [p for p in self.parts if not (self.harmful_only and p in NEEDS_HARMLESS)]

    def token_overrides(self) -> dict[str, list[int]]:
        """``refusal_tokens`` as ``{language: [ids]}``."""
        return parse_token_overrides(self.refusal_tokens)


def parse_token_overrides(items: list[str]) -> dict[str, list[int]]:
    """``["de=40,19238"]`` -> ``{"de": [40, 19238]}``.

    >>> parse_token_overrides(["de=40,7", "zh=1"])
    {'de': [40, 7], 'zh': [1]}
    """
    out = {}
    for item in items:
        language, _, ids = item.partition("=")
        try:
            out[language.strip()] = [int(x) for x in ids.split(",") if x.strip()]
        except ValueError as error:
            raise SettingsError(f"--refusal-tokens takes LANG=ID,ID (token ids), got {item!r}") from error
        if not language.strip() or not out[language.strip()]:
            raise SettingsError(f"--refusal-tokens takes LANG=ID,ID (token ids), got {item!r}")
    return out
