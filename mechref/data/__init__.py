"""Prompt sets: the bundled English set, and loaders for the reference dataset layouts."""

from mechref.data.prompts import (
    PromptSet,
    bundled,
    load_from_hub,
    load_polyrefuse,
    load_prompt_file,
    load_refusal_direction_splits,
    multilingual,
    multilingual_languages,
)

__all__ = [
    "PromptSet",
    "bundled",
    "load_from_hub",
    "load_polyrefuse",
    "load_prompt_file",
    "load_refusal_direction_splits",
    "multilingual",
    "multilingual_languages",
]
