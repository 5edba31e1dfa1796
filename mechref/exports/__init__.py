"""Edited models written for the tools people run models with (beside the plain ``transformers``
folder of :func:`mechref.refusal.orthogonalize.export_orthogonalized`)."""

from mechref.exports.control_vector import export_control_vector
from mechref.exports.gguf import export_gguf, write_gguf
from mechref.exports.lora import export_lora, lora_factors

__all__ = ["export_control_vector", "export_gguf", "export_lora", "lora_factors", "write_gguf"]
