"""Settings of the quickstart.

>>> QuickstartSettings().resolve_layer(28)
17
>>> QuickstartSettings(layer=5).resolve_layer(28)
5
"""

from __future__ import annotations

from dataclasses import dataclass

from mechref.framework.settings import Settings, SettingsError, option


@dataclass
class QuickstartSettings(Settings):
    n_train: int = option(32, "training prompts per class", minimum=1)
    n_eval: int = option(6, "held-out prompts per class to generate for", minimum=1)
    layer: float = option(0.6, "layer of the direction: an index, or a fraction of the depth below 1", minimum=0)
    max_new_tokens: int = option(32, "tokens generated per reply", minimum=1)
    batch_size: int = option(16, "prompts per forward pass", minimum=1)
    seed: int = option(42, "sampling seed of the training prompts")

    def validate(self) -> None:
        if self.layer >= 1 and self.layer != int(self.layer):
            raise SettingsError(f"layer is an index (a whole number) or a fraction below 1, got {self.layer} (--layer)")

    def resolve_layer(self, n_layers: int) -> int:
        """The layer as an index: ``layer`` itself when at least 1, else that share of ``n_layers``; an error
        past the last layer."""
        layer = int(self.layer) if self.layer >= 1 else round(self.layer * n_layers)
        if layer >= n_layers:
            raise SettingsError(f"layer {layer} is out of range for a model with {n_layers} layers (--layer)")
        return layer
