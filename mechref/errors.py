"""The exceptions mechref raises. Each message says what went wrong and how to fix it."""

from __future__ import annotations

from typing import Any, Sequence


class MechrefError(Exception):
    """Base class of every error mechref raises on purpose."""


class ModelNotFoundError(MechrefError, ValueError):
    """A model name or path that mechref cannot resolve (unknown name, offline hub, missing path)."""


class ChecksumError(MechrefError):
    """An assembled or cached model file whose hash differs from the expected one."""


class DataFormatError(MechrefError, ValueError):
    """A prompt file or prompt list that is empty or malformed."""


class ShapeError(MechrefError, ValueError):
    """A tensor (a direction, a vector) whose shape does not fit the model."""


class ContextLengthError(MechrefError, ValueError):
    """A prompt longer than the model's context window."""


class ChatTemplateError(MechrefError, ValueError):
    """A tokenizer without a usable chat template."""


class NonFiniteError(MechrefError, ValueError):
    """A tensor holding NaN or infinite values where finite numbers are required."""


class UnsupportedModelError(MechrefError, ValueError):
    """The model's architecture is not one mechref can hook."""


class NoRefusalsError(MechrefError, ValueError):
    """The model refused none of the prompts a step needs refusals from (e.g. to derive refusal tokens)."""


class NoRefusalWarning(UserWarning):
    """The model refused the harmful prompts no more often than the harmless ones: a result marked as measuring
    no refusal."""


class SettingsError(MechrefError, ValueError):
    """A setting out of range, of the wrong type, or unknown (in Python, a config file or the command line)."""


class OutputTargetError(MechrefError, ValueError):
    """An output path that would overwrite or delete files mechref did not write."""


class AllCandidatesFilteredError(MechrefError):
    """Every candidate was discarded by a filter; ``scores`` holds the full table."""

    def __init__(self, scores: Sequence[Any], settings: Any, n_forward_passes: int = 0, n_prompt_passes: int = 0):
        self.scores = scores
        self.n_forward_passes, self.n_prompt_passes = n_forward_passes, n_prompt_passes
        lines = [f"{'pos':>4} {'layer':>5} {'bypass':>8} {'induce':>8} {'kl':>8}  removed by"]
        for s in scores:
            fmt = lambda v: f"{v:8.3f}" if v is not None else f"{'-':>8}"
            lines.append(
                f"{s.position:>4} {s.layer:>5} {fmt(s.bypass)} {fmt(s.induce)} {fmt(s.kl)}  {', '.join(s.filtered_by) or '-'}"
            )
        super().__init__(
            "every candidate direction was filtered out (thresholds: KL <= "
            f"{settings.kl_threshold}, induce > {settings.induce_threshold}, layers before the last "
            f"{settings.prune_layer_fraction:.0%}). A model that refuses weakly induces no refusal at any candidate: "
            "choose by activation cosines instead, which needs neither refusal tokens nor generation (--selection "
            "cosmic), or let the paper's selection fall back to it (--selection auto). Or loosen a threshold (e.g. "
            "--kl-threshold, or --prune-layer-fraction on a shallow model), or check the refusal tokens. Full table:\n"
            + "\n".join(lines)
        )


class InputError(MechrefError, ValueError):
    """A user-supplied value that cannot be right for this run (checked before the work starts)."""


class NoRunsError(MechrefError, ValueError):
    """A folder holding no run folder mechref wrote."""


class BrowserUnavailableError(MechrefError, RuntimeError):
    """No Chromium or no Playwright to open pages with."""
