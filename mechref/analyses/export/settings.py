"""Settings of the export command: which direction, which edit, which formats, how to verify.

>>> settings = ExportSettings()
>>> settings.formats, settings.gguf_type, settings.coefficient
(['hf', 'lora', 'gguf', 'control-vector'], 'bf16', -1.0)
>>> settings.strengths(4) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mechref.edits.strengths import EditStrengths, LayerKernel
from mechref.framework.settings import Settings, SettingsError, option

FORMATS = ("hf", "lora", "gguf", "control-vector")


@dataclass
class ExportSettings(Settings):
    """A stored refusal direction exported as an edited model in several formats, each loaded back
    by its consuming library and measured against the in-memory edit."""

    direction: Path | None = option(
        None, "direction.safetensors of the refusal-direction analysis (or its folder)", metavar="FILE"
    )
    direction_run: Path = option(
        Path("runs/refusal_direction"), "refusal-direction run folder, used or computed there on first use", metavar="DIR"
    )
    formats: list[str] = option(
        list(FORMATS),
        "what to write: hf (transformers folder), lora (PEFT adapter), gguf (llama.cpp), control-vector (llama.cpp)",
        nargs="+",
        metavar="FORMAT",
    )
    gguf_type: Literal["f32", "f16", "bf16", "q8_0"] = option("bf16", "tensor type of the GGUF's matrices")
    norm_preserving: bool = option(False, "give every write vector back its norm after removing the direction (not for lora)")
    attention_kernel: list[float] | None = option(
        None,
        "share of the direction removed from attention outputs per layer: PEAK WIDTH MIN MAX (none: all of it everywhere)",
        nargs=4,
        metavar="X",
    )
    mlp_kernel: list[float] | None = option(
        None, "the same for MLP outputs: PEAK WIDTH MIN MAX (none: all of it everywhere)", nargs=4, metavar="X"
    )
    embedding_strength: float = option(1.0, "share of the direction removed from the token embedding", minimum=0, maximum=1.5)
    coefficient: float = option(
        -1.0, "control vector: coefficient times the difference-in-means vector, added where the direction was found"
    )
    verify: bool = option(True, "load every export back with its consuming library and measure it")
    n_verify: int = option(16, "held-out harmful prompts whose greedy replies are judged per export", minimum=1)
    n_kl: int = option(16, "held-out harmless prompts for the first-token KL against the unedited model", minimum=1)
    max_new_tokens: int = option(128, "tokens generated per reply, stopping at EOS", minimum=1)
    judge: Literal["substring", "arditi"] = option("substring", "refusal judge of the replies")
    llama_server: Path | None = option(
        None,
        "a llama.cpp llama-server binary: the GGUF and the control vector are also run in llama.cpp itself "
        "(default: $MECHREF_LLAMA_SERVER or one on PATH; none found: skipped, and the summary says so)",
        metavar="PATH",
    )
    batch_size: int = option(16, "prompts per generation batch", minimum=1)
    resume: bool = option(True, "reuse the stages already computed in the output folder with the same settings")
    static: list[str] = option(
        ["png"], "static figure formats, written when kaleido and Chromium are present", nargs="*", metavar="FORMAT"
    )

    def validate(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise SettingsError(f"unknown export format {unknown[0] if unknown else '(none)'}; choose from {', '.join(FORMATS)}")
        if self.norm_preserving and "lora" in self.formats:
            raise SettingsError(
                "a norm-preserving edit is no low-rank update, so it has no LoRA export: drop lora or --norm-preserving"
            )
        for name in ("attention_kernel", "mlp_kernel"):
            values = getattr(self, name)
            if values is not None:
                try:
                    LayerKernel(*values)
                except ValueError as error:
                    raise SettingsError(f"{name}: {error}") from error

    def strengths(self, n_layers: int) -> EditStrengths | None:
        """The per-layer edit strengths, or None for the paper's full edit everywhere."""
        if self.attention_kernel is None and self.mlp_kernel is None and self.embedding_strength == 1.0:
            return None
        full = LayerKernel(0.0, 1.0, 1.0, 1.0)
        return EditStrengths.from_kernels(
            n_layers,
            attention=LayerKernel(*self.attention_kernel) if self.attention_kernel else full,
            mlp=LayerKernel(*self.mlp_kernel) if self.mlp_kernel else full,
            embedding=self.embedding_strength,
        )
