"""Defaults chosen per device: how many prompts go through the model at once.

On a CPU a decoding step is bound by reading the weights up to a few dozen rows, and costs little
more past that: the generation defaults (``generation_batch_size``, 64-128 rows) decode about twice
as many tokens per second as 32 rows on a 2-core CPU with bfloat16 matrix units
(``benchmarks/results/generation_batch.json``). A GPU has room for far more rows: generation at
batch 256 ran 5.9 times faster than at 32 on an H100 (``../shared/gpu/README.md``). So on CUDA the
batch sizes the user did not set are raised to what half of the free memory holds for a row's
key/value cache and activations (at ``context`` tokens), at most :data:`MAX_ROWS`; everywhere else
they stay as they are.

>>> from types import SimpleNamespace
>>> cpu = SimpleNamespace(device=torch.device("cpu"))
>>> rows_for_memory(cpu, 32)
32
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

#: The largest batch (rows per forward pass) a GPU default is raised to.
MAX_ROWS = 256
BATCH_FIELDS = ("batch_size", "generation_batch_size")


def row_bytes(model: Any, context: int) -> int:
    """Bytes one row needs at ``context`` tokens: its key/value cache over every layer, a few
    residual-width activations per token, and one row of logits (float32).

    >>> from types import SimpleNamespace
    >>> cfg = SimpleNamespace(num_hidden_layers=2, num_key_value_heads=2, hidden_size=64, num_attention_heads=4, vocab_size=100)
    >>> m = SimpleNamespace(hf_model=SimpleNamespace(config=cfg), dtype=torch.bfloat16)
    >>> row_bytes(m, 10)   # 2 (k, v) x 2 layers x 2 heads x 16 x 10 x 2 B + 8 x 64 x 10 x 2 B + 100 x 4 B
    13200
    """
    config = model.hf_model.config
    element = torch.finfo(model.dtype).bits // 8
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    cache = 2 * config.num_hidden_layers * kv_heads * head_dim * context * element
    activations = 8 * config.hidden_size * context * element
    return int(cache + activations + config.vocab_size * 4)


def rows_for_memory(model: Any, default: int, context: int = 512) -> int:
    """The batch size for ``model``'s device: on CUDA, what half the free memory holds (at least
    ``default``, at most :data:`MAX_ROWS`); on any other device, ``default``."""
    if model.device.type != "cuda":
        return default
    free, _total = torch.cuda.mem_get_info(model.device)
    fits = int(0.5 * free // max(1, row_bytes(model, context)))
    return max(default, min(MAX_ROWS, fits))


def device_batch_defaults(model: Any, settings: Any, given: set[str]) -> tuple[Any, list[str]]:
    """``settings`` with every batch-size field the user did not set (``given``: the names set on the
    command line or in a config file) raised for the model's device; and a line per change."""
    changes: dict[str, int] = {}
    for name in BATCH_FIELDS:
        if hasattr(settings, name) and name not in given:
            value = rows_for_memory(model, getattr(settings, name))
            if value != getattr(settings, name):
                changes[name] = value
    notes = [
        f"{name} {getattr(settings, name)} -> {value} for {model.device} (set --{name.replace('_', '-')} to choose)"
        for name, value in changes.items()
    ]
    return (dataclasses.replace(settings, **changes) if changes else settings), notes


# CPU flags of the instructions that compute in bfloat16 natively (x86: AVX-512 BF16, AMX).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU computes in bfloat16 natively (True/False), or None where it cannot tell
    (no ``/proc/cpuinfo``: not Linux). Without it, torch emulates bfloat16 matrix products and they
    run about 3x slower than float32 (a 2-core AMD EPYC with AVX2 only: 179 ms vs 55 ms for a
    ``[64, 1536] x [1536, 8960]`` product).

    >>> cpu_has_native_bf16("flags : fpu avx2 avx512f avx512_bf16")
    True
    >>> cpu_has_native_bf16("flags : fpu avx2")
    False
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                cpuinfo = handle.read()
        except OSError:
            return None
    flags = {word for line in cpuinfo.splitlines() if line.startswith("flags") for word in line.split()}
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def slow_dtype_note(model: Any) -> str | None:
    """One line when the model computes in bfloat16 on a CPU that emulates it (slower than float32),
    naming the option that is faster there; None otherwise."""
    if model.device.type != "cpu" or model.dtype != torch.bfloat16 or cpu_has_native_bf16() is not False:
        return None
    return (
        "note: this CPU has no native bfloat16 instructions, so bfloat16 runs about 3x slower here than float32; "
        "--dtype float32 is faster on this machine (and exact)"
    )
