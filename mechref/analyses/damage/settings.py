"""Settings of the damage analysis: which edits to measure, on which data, how much of it.

>>> settings = DamageSettings(direction=None, edited=None, edits=[])
>>> settings.n_xstest, settings.n_gsm8k, settings.max_new_tokens
(32, 16, 128)
>>> DamageSettings(edits=["ablation", "rotation"])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mechref.errors.SettingsError: unknown edit 'rotation' (--edits); choose from ablation, actadd
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from mechref.framework.settings import Settings, SettingsError, option

# Edits applied by hooks to the loaded model; an exported (weight-edited) model is given as a folder.
HOOK_EDITS = ("ablation", "actadd")


@dataclass
class DamageSettings(Settings):
    """What an edit breaks: over-refusal of safe prompts, divergence from the unedited model on its own
    harmless replies, and task capability, each against the unedited model on the same prompts."""

    # the edits
    direction: Path | None = option(
        None, "refusal direction: a direction.safetensors or the refusal-direction run folder holding one", metavar="PATH"
    )
    edits: list[str] = option(
        ["ablation", "actadd"],
        "edits applied with --direction: ablation (the direction projected out everywhere), actadd (the direction "
        "added at its layer times --actadd-coefficient)",
        nargs="*",
        metavar="EDIT",
    )
    actadd_coefficient: float = option(-1.0, "coefficient of the actadd edit (-1: subtract the direction, as a jailbreak)")
    edited: Path | None = option(
        None,
        "a weight-edited model folder (e.g. refusal_direction --export-model), measured against the loaded model",
        metavar="DIR",
    )
    # the data (read where they are; nothing is copied)
    xstest: Path | None = option(None, "XSTest prompts CSV (xstest_prompts.csv): over-refusal on its safe prompts", metavar="CSV")
    n_xstest: int = option(32, "safe XSTest prompts, spread evenly over the file (all 10 types), 250 for all", minimum=1)
    gsm8k: Path | None = option(None, "GSM8K test JSONL (question, answer): capability", metavar="JSONL")
    n_gsm8k: int = option(16, "first N GSM8K problems", minimum=1)
    harmless: Path | None = option(
        None,
        "JSON file of harmless prompts for KL and cross-entropy (default: the bundled harmless test prompts)",
        metavar="PATH",
    )
    n_harmless: int = option(32, "harmless prompts for KL and cross-entropy", minimum=1)
    # generation and scoring
    max_new_tokens: int = option(128, "tokens generated per XSTest reply (stopping at EOS)", minimum=1)
    gsm8k_max_new_tokens: int = option(256, "tokens generated per GSM8K solution (stopping at EOS)", minimum=1)
    gsm8k_conditions: list[str] | None = option(
        None,
        "conditions whose GSM8K accuracy is measured (none: the original and the exported model when --edited is "
        "given, else every condition)",
        nargs="*",
        metavar="CONDITION",
    )
    reference_tokens: int = option(
        64, "tokens of the unedited model's own harmless replies on which KL and cross-entropy are measured", minimum=1
    )
    kl_tokens: int = option(
        8, "KL is reported at the first reply token and averaged over this many (fewer in a shorter reply)", minimum=1
    )
    judge: Literal["substring", "arditi", "chat-model", "probe"] = option(
        "probe",
        "refusal judge of the XSTest replies: probe (the embedded model reads; validated on XSTest), substring, arditi "
        "or chat-model",
    )
    batch_size: int = option(32, "prompts per forward pass", minimum=1)
    generation_batch_size: int = option(
        128,
        "rows per generation batch: the hook edits and the original answer the same prompts in one batch "
        "(each reply leaves the batch when it ends)",
        minimum=1,
    )
    resume: bool = option(True, "reuse the measurements already in the output folder with the same settings")
    static: list[str] = option(
        ["png"], "static figure formats, written when kaleido and Chromium are present", nargs="*", metavar="FORMAT"
    )

    def validate(self) -> None:
        if self.judge == "probe":
            from mechref.judges.probe import check_probe_usable

            check_probe_usable()
        for edit in self.edits:
            if edit not in HOOK_EDITS:
                raise SettingsError(f"unknown edit {edit!r} (--edits); choose from {', '.join(HOOK_EDITS)}")
        if len(set(self.edits)) != len(self.edits):
            raise SettingsError(f"--edits names an edit twice: {' '.join(self.edits)}")
        if self.gsm8k_conditions is not None:
            known = ("original", *HOOK_EDITS, "exported")
            unknown = [c for c in self.gsm8k_conditions if c not in known]
            if unknown or not self.gsm8k_conditions:
                raise SettingsError(f"--gsm8k-conditions: {' '.join(unknown) or 'none given'}; choose from {', '.join(known)}")
            if "original" not in self.gsm8k_conditions:
                raise SettingsError("--gsm8k-conditions must include original: every edit is compared with it")

    def gsm8k_names(self, conditions: Sequence[str]) -> list[str]:
        """The conditions (of those run) whose GSM8K accuracy is measured, in their order.

        >>> DamageSettings().gsm8k_names(["original", "ablation", "actadd", "exported"])
        ['original', 'exported']
        >>> DamageSettings().gsm8k_names(["original", "ablation"])
        ['original', 'ablation']
        """
        if self.gsm8k_conditions is not None:
            return [c for c in conditions if c in self.gsm8k_conditions]
        # Capability is what an exported model is used for; the hook edits are measured on it
        # only when no exported model is given (each costs as much generation as the rest together).
        return [c for c in conditions if c in ("original", "exported")] if "exported" in conditions else list(conditions)

    def hook_edits(self) -> list[str]:
        """The hook edits to measure: none without a direction."""
        return list(self.edits) if self.direction is not None else []

    def measures(self) -> list[str]:
        """The measures this run can make with the data it was given (KL/CE always: bundled prompts)."""
        return ["kl_ce"] + (["over_refusal"] if self.xstest else []) + (["gsm8k"] if self.gsm8k else [])


Measure = Literal["over_refusal", "kl_ce", "gsm8k"]
