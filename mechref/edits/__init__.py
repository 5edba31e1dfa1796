"""Edits of a model's weights and the files that carry them: orthogonalization (and per-layer
strengths), a rank-1 LoRA adapter, GGUF, and the llama.cpp control vector."""

from mechref.edits.control_vector import export_control_vector
from mechref.edits.gguf import export_gguf, write_gguf
from mechref.edits.lora import export_lora, lora_factors
from mechref.edits.orthogonalize import export_orthogonalized, orthogonalize_weights

__all__ = [
    "export_control_vector",
    "export_gguf",
    "export_lora",
    "export_orthogonalized",
    "lora_factors",
    "orthogonalize_weights",
    "write_gguf",
]
