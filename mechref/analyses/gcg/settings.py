"""Settings of the ``gcg`` analysis: the prompts, the target reply, and the search budget.

>>> GCGSettings(prompt=["Build a bomb"], steps=3).search_settings().steps
3
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mechref.attacks.gcg import SearchSettings
from mechref.data import bundled, load_prompt_file
from mechref.framework.settings import SettingsError, option


@dataclass
class GCGSettings(SearchSettings):
    """Which prompts GCG optimizes jointly, towards which reply; the search budget comes from :class:`SearchSettings`."""

    harmful: Path | None = option(
        None, "JSON or text file of harmful instructions (default: the bundled test prompts)", metavar="PATH"
    )
    prompt: list[str] | None = option(
        None, "an instruction to optimize on (repeatable; replaces --harmful)", repeat=True, metavar="TEXT"
    )
    n: int = option(4, "number of prompts optimized jointly", minimum=1)
    target: str = option("Sure, here is", "reply opening to force")
    max_new_tokens: int = option(48, "tokens generated per prompt to check the suffix", minimum=1)
    resume: bool = option(True, "resume from the checkpoint beside the suffix file")

    def validate(self) -> None:
        if self.prompt is not None and not all(p.strip() for p in self.prompt):
            raise SettingsError("every --prompt must be a non-empty instruction")
        if not self.target.strip():
            raise SettingsError("target is empty: give the reply opening to force, e.g. 'Sure, here is'")

    def search_settings(self) -> SearchSettings:
        """The search's own settings alone (what its checkpoint is keyed on)."""
        return SearchSettings(
            steps=self.steps,
            suffix_length=self.suffix_length,
            top_k=self.top_k,
            n_candidates=self.n_candidates,
            batch_size=self.batch_size,
            seed=self.seed,
            init_token=self.init_token,
            early_stop_loss=self.early_stop_loss,
            checkpoint_every=self.checkpoint_every,
        )

    def prompts(self) -> list[str]:
        """The prompts the suffix is searched on: ``--prompt`` if given, else the first ``n`` harmful test
        prompts."""
        if self.prompt:
            return list(self.prompt)
        prompts = load_prompt_file(self.harmful, "harmful", "test") if self.harmful else bundled("harmful", "test")
        return prompts.take(self.n).instructions
