"""How a model is chosen and loaded, as settings every command shares (``--model``, ``--dtype``,
``--device``, ...).

>>> ModelSettings().dtype
'bfloat16'
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from mechref.errors import MechrefError, SettingsError
from mechref.framework.settings import Settings, option
from mechref.model.chat import chat_template_text
from mechref.model.embedded import DEFAULT_MODEL
from mechref.model.loading import MechrefModel, check_chat_template, check_loading, load_model, resolve_dtype


def check_device(device: str) -> str:
    """``device`` if torch knows it and this machine has it (checked before a model loads).

    >>> check_device("cpu")
    'cpu'
    >>> check_device("tpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mechref.errors.SettingsError: unknown device 'tpu'; --device takes cpu, cuda, cuda:1, mps, ...
    """
    if device == "auto":
        return device
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise SettingsError(f"unknown device {device!r}; --device takes cpu, cuda, cuda:1, mps, ...") from error
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"--device {device}: this machine has no CUDA GPU that torch can use (torch {torch.__version__})")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise SettingsError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError(f"--device {device}: the Apple MPS backend is not available on this machine")
    return device


@dataclasses.dataclass
class ModelSettings(Settings):
    """Which model an analysis runs on, and how it is loaded (shared by every command)."""

    model: str | None = option(
        None,
        f"embedded model name (default {DEFAULT_MODEL}), local Hugging Face folder, local .gguf file, or hub id",
        metavar="NAME_OR_PATH",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = option(
        "bfloat16",
        "weights dtype (bfloat16 is about 3x faster on CPUs with bf16 support, slightly less exact; "
        "mechref.load_model in Python defaults to float32)",
    )
    device: str = option("auto", "torch device: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, cuda:N, mps")
    device_map: str | None = option(
        None,
        "spread the model over this machine's devices with accelerate: auto, balanced or sequential (instead of --device)",
        metavar="MAP",
    )
    max_memory: list[str] | None = option(
        None, "with --device-map, memory per device: 0=70GiB 1=70GiB cpu=200GiB", nargs="+", metavar="DEVICE=SIZE"
    )
    quantize: Literal["8bit", "4bit"] | None = option(
        None, "load the weights in 8 or 4 bits with bitsandbytes, for analysis only (no DFA, no export)"
    )
    system_prompt: str | None = option(None, "system prompt of every chat (default: the chat template's own)")
    chat_template: str | None = option(
        None,
        "chat template for a model without one (a base model): a format mechref ships (gemma), a .jinja file, or a Jinja string",
        metavar="TEMPLATE",
    )
    thinking: Literal["on", "off"] | None = option(
        None, "a reasoning model's thinking switch (its template's enable_thinking): on or off (default: the template's)"
    )
    think_positions: Literal["include", "skip"] = option(
        "include", "with --thinking off, read the template's empty thinking block among the post-instruction positions or skip it"
    )

    def validate(self) -> None:
        check_device(self.device)
        if self.device_map is not None and self.device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
            raise SettingsError(f"unknown device map {self.device_map!r}; choose auto, balanced, balanced_low_0 or sequential")
        try:
            check_loading(self.device, self.device_map, self.memory_limits(), self.quantize)
            if self.chat_template is not None:
                chat_template_text(self.chat_template)
        except (ValueError, MechrefError) as error:
            raise SettingsError(str(error)) from error

    def check_chat(self) -> None:
        """Stop before loading, naming the ways out, when the model has no chat template and none is given
        (a base model): every analysis formats chats (reads a GGUF's metadata or a folder's tokenizer files only)."""
        check_chat_template(str(self.model) if self.model is not None else DEFAULT_MODEL, self.chat_template)

    def memory_limits(self) -> dict[int | str, str] | None:
        """``--max-memory`` as accelerate takes it: GPU indices as ints, ``cpu``/``disk`` by name.

        >>> ModelSettings(device_map="auto", max_memory=["0=70GiB", "cpu=100GiB"]).memory_limits()
        {0: '70GiB', 'cpu': '100GiB'}
        """
        if not self.max_memory:
            return None
        limits: dict[int | str, str] = {}
        for item in self.max_memory:
            key, sep, size = item.partition("=")
            if not sep or not size or not (key.isdigit() or key in ("cpu", "mps", "disk")):
                raise SettingsError(f"--max-memory takes DEVICE=SIZE (0=70GiB, cpu=200GiB), got {item!r}")
            limits[int(key) if key.isdigit() else key] = size
        return limits

    def check_memory(self, settings: Any, given: set[str] | None = None) -> tuple[Any, list[str]]:
        """``settings`` with the batch sizes the user did not set (``given``) lowered to what fits in this
        machine's available memory, and a line per change; stop before loading, with the fix, when the
        model (or a batch size the user set) will not fit (:mod:`mechref.model.need`). Runs on the CPU only,
        without a device map or quantization (a GPU's memory is its own budget)."""
        from mechref.model.embedded import described_folder, find_embedded
        from mechref.model.loading import _resolve, resolve_device
        from mechref.model.need import available_bytes, check_need, command_need, fit_batches

        if self.device_map or self.quantize or resolve_device(self.device).type != "cpu":
            return settings, []
        name = str(self.model) if self.model is not None else DEFAULT_MODEL
        # Sizes and shapes only: an embedded model's cache in any dtype says them (no second dequantization).
        embedded = find_embedded(name)
        dtype = resolve_dtype(self.dtype)
        folder = described_folder(embedded, dtype) if embedded else _resolve(name, False, dtype)[0]
        need = command_need(folder, dtype, settings)
        if need is None:
            return settings, []
        available = available_bytes()
        settings, notes = fit_batches(need, available, settings, given or set())
        if notes:
            need = command_need(folder, dtype, settings) or need
        check_need(need, available, str(self.dtype))
        return settings, notes

    def load(self, chat: bool = True) -> MechrefModel:
        """Load the model these settings describe (:func:`~mechref.model.loading.load_model`; ``chat=False``: a
        model only described, which may lack a chat template)."""
        return load_model(
            self.model,
            dtype=self.dtype,
            device=self.device,
            system_prompt=self.system_prompt,
            chat_template=self.chat_template,
            thinking=None if self.thinking is None else self.thinking == "on",
            think_positions=self.think_positions,
            device_map=self.device_map,
            max_memory=self.memory_limits(),
            quantize=self.quantize,
            chat=chat,
        )
