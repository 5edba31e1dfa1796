"""Settings of the suffix-hijack analysis (Arditi et al. 2024, section 5).

>>> SuffixHijackSettings(n=4).top_k
8
>>> SuffixHijackSettings(suffix="x", run_gcg=True)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mechref.errors.SettingsError: give at most one of suffix, suffix_file and run_gcg ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mechref.framework.settings import Settings, SettingsError, option


@dataclass
class SuffixHijackSettings(Settings):
    """Which suffix, prompts and direction the analysis compares, and how much it measures."""

    # adversarial suffix (default: the one mechref ships for the model)
    suffix: str | None = option(None, "suffix text (a leading space is added if missing)", metavar="TEXT")
    suffix_file: Path | None = option(None, "a suffix file written by mechref gcg", metavar="FILE")
    run_gcg: bool = option(False, "search a suffix with GCG first (slow on a CPU; written to OUT/suffix.json)")
    gcg_steps: int = option(250, "GCG steps with --run-gcg", minimum=1)
    gcg_prompts: int = option(4, "prompts GCG optimizes jointly with --run-gcg", minimum=1)
    random_seed: int = option(0, "seed of the random control suffix")
    # prompts (default: the bundled test prompts)
    harmful: Path | None = option(None, "JSON or text file of harmful instructions", metavar="PATH")
    harmless: Path | None = option(None, "JSON or text file of harmless instructions", metavar="PATH")
    n: int = option(8, "first N prompts of each class", minimum=1)
    # refusal direction
    direction: Path | None = option(
        None, "direction.safetensors from the refusal-direction analysis (or its folder)", metavar="FILE"
    )
    direction_run: Path = option(
        Path("runs/refusal_direction"), "refusal-direction run folder, used or computed there on first use", metavar="DIR"
    )
    # analysis
    top_k: int = option(8, "heads studied, by attribution on the plain harmful prompts", minimum=1)
    max_new_tokens: int = option(
        128, "tokens generated per reply, stopping at EOS (refusals often follow a compliant-looking opening)", minimum=1
    )
    judge: Literal["substring", "arditi", "chat-model", "probe"] = option(
        "probe",
        "refusal judge: the probe (English: the embedded model reads each reply after a fixed request; the judge "
        "validated on XSTest's human labels: docs/results/judges.md), mechref's phrase list, Arditi et al.'s 12 phrases, or the "
        "model itself asked whether a reply refuses",
    )
    batch_size: int = option(32, "prompts per forward pass", minimum=1)
    resume: bool = option(True, "reuse the measurements and replies already in the output folder")
    static: list[str] = option(
        ["png"], "static figure formats, written when kaleido and Chromium are present", nargs="*", metavar="FORMAT"
    )

    def validate(self) -> None:
        if self.judge == "probe":
            from mechref.judges.probe import check_probe_usable

            check_probe_usable()
        chosen = [
            name
            for name, given in (
                ("suffix", self.suffix is not None),
                ("suffix_file", self.suffix_file is not None),
                ("run_gcg", self.run_gcg),
            )
            if given
        ]
        if len(chosen) > 1:
            raise SettingsError(f"give at most one of suffix, suffix_file and run_gcg (got {', '.join(chosen)})")
        if self.suffix is not None and not self.suffix.strip():
            raise SettingsError("suffix is empty; pass some text")
