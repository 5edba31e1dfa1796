"""The exceptions mechref raises. Each message says what went wrong and how to fix it."""

from __future__ import annotations


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
