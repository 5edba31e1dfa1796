"""Will the command fit in this machine's memory? Said before the model loads, with the setting to change.

The weights' size comes from the model folder's safetensors headers (no tensor is read); a batch's
from :func:`~mechref.model.devices.row_bytes` (its key/value cache, activations and logits). A
command stops with the fix when the weights alone (and the process around them) exceed the memory
available, or when its largest batch would; the estimate errs high, so a command it lets through
can still come close, never the other way round.

>>> need = Need(weights=3.3 * GIB, batch=1.0 * GIB, rows=64, setting="generation_batch_size")
>>> check_need(need, available=6 * GIB, dtype="bfloat16")  # fits: passes silently
>>> check_need(need, available=4 * GIB, dtype="bfloat16")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mechref.errors.SettingsError: batches of 64 rows ... --generation-batch-size 44 (or fewer), ...
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from mechref.errors import SettingsError
from mechref.model.devices import row_bytes

GIB = 2**30
#: Python, torch, the tokenizer and the bridge around the weights (measured: 0.4-0.8 GiB).
RUNTIME = int(0.8 * GIB)
#: Tokens a row is assumed to hold: a chat prompt and its reply.
CONTEXT = 512


@dataclass(frozen=True)
class Need:
    """Bytes a command needs: the weights (with the process around them), and its largest batch of ``rows``
    (set by ``setting``)."""

    weights: float
    batch: float
    rows: int
    setting: str


def available_bytes() -> int | None:
    """Memory the system can give this process now (``MemAvailable``: free and reclaimable), or None
    where it does not say."""
    try:
        match = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


# The tensors a weight edit changes (the embedding and every residual-stream writer), by the end of
# their names in the common families: what an edited model loaded beside its base holds of its own.
EDITED_TENSORS = ("embed_tokens.weight", "wte.weight", "o_proj.weight", "down_proj.weight", "c_proj.weight", "dense.weight")


def weight_bytes(folder: str | Path, dtype: torch.dtype, only: tuple[str, ...] | None = None) -> int | None:
    """The size of a model folder's weights loaded in ``dtype``, from its safetensors headers (``only``:
    the tensors whose names end so); None if it has none."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    element = torch.finfo(dtype).bits // 8
    total = 0
    for file in files:
        with open(file, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        for name, entry in header.items():
            if name == "__metadata__" or (only is not None and not name.endswith(only)):
                continue
            count = 1
            for n in entry["shape"]:
                count *= int(n)
            floating = entry["dtype"] in ("F64", "F32", "F16", "BF16")
            total += count * (element if floating else (entry["data_offsets"][1] - entry["data_offsets"][0]) // max(1, count))
    return total


def command_need(folder: str | Path, dtype: torch.dtype, settings: Any) -> Need | None:
    """What a command with ``settings`` needs on the model in ``folder`` (None where the folder does not say)."""
    weights = weight_bytes(folder, dtype)
    config_file = Path(folder) / "config.json"
    if weights is None or not config_file.is_file():
        return None
    config = SimpleNamespace(**json.loads(config_file.read_text()))
    config = (getattr(config, "text_config", None) and SimpleNamespace(**config.text_config)) or config
    try:
        per_row = row_bytes(SimpleNamespace(hf_model=SimpleNamespace(config=config), dtype=dtype), CONTEXT)
    except AttributeError:  # a config without the usual names: no estimate rather than a wrong one
        return None
    rows, setting = max(
        ((int(getattr(settings, name)), name) for name in ("generation_batch_size", "batch_size") if hasattr(settings, name)),
        default=(1, "batch_size"),
    )
    return Need(weights=weights + RUNTIME + beside_bytes(settings, dtype), batch=rows * per_row, rows=rows, setting=setting)


def beside_bytes(settings: Any, dtype: torch.dtype) -> int:
    """What a command holds beside the model: an edited model it compares with it (``settings.edited``, a
    folder) shares every tensor the edit left alone and holds its own edited ones (all of its
    weights where none carries a known name: the estimate errs high). Where the folder's tensors can
    take the place of the model's own (:class:`~mechref.model.swap.WeightSwap`, damage's way) only
    one version is resident at a time: the estimate is then an upper bound, by the edited tensors."""
    edited = getattr(settings, "edited", None)
    if not edited or not Path(edited).is_dir():
        return 0
    own = weight_bytes(edited, dtype, only=EDITED_TENSORS)
    return own if own else weight_bytes(edited, dtype) or 0


def fit_batches(need: Need, available: int | None, settings: Any, given: set[str]) -> tuple[Any, list[str]]:
    """``settings`` with every batch size the user did not set (``given``) lowered to what fits beside the
    model in ``available`` bytes on this CPU, and a line per change; unchanged where the largest batch fits,
    where a batch size the user set is the one that does not (:func:`check_need` then names the fix), or
    where the weights alone do not fit. In bfloat16 a reply can change with the rows decoded beside it:
    a lowered batch is said, and recorded with every result it makes (the stages' manifests).

    >>> from types import SimpleNamespace
    >>> need = Need(weights=3 * GIB, batch=2 * GIB, rows=128, setting="generation_batch_size")
    >>> fitted, notes = fit_batches(need, 4 * GIB, SimpleNamespace(generation_batch_size=128, batch_size=32), set())
    >>> fitted.generation_batch_size, fitted.batch_size
    (64, 32)
    """
    import dataclasses

    if available is None or need.weights > available or need.weights + need.batch <= available:
        return settings, []
    per_row = need.batch / max(1, need.rows)
    fits = max(1, int((available - need.weights) // max(1.0, per_row)))
    fields = [name for name in ("generation_batch_size", "batch_size") if hasattr(settings, name)]
    if any(name in given and getattr(settings, name) > fits for name in fields):
        return settings, []  # a size the user chose does not fit: check_need says so, naming it
    changes = {name: fits for name in fields if getattr(settings, name) > fits}
    notes = [
        f"{name} {getattr(settings, name)} -> {value}: what fits in the {available / GIB:.1f} GiB this machine has "
        f"available (set --{name.replace('_', '-')} to choose)"
        for name, value in changes.items()
    ]
    if not changes:
        return settings, []
    replace = dataclasses.replace if dataclasses.is_dataclass(settings) else _replace_namespace
    return replace(settings, **changes), notes


def _replace_namespace(settings: Any, **changes: Any) -> Any:
    return SimpleNamespace(**{**vars(settings), **changes})


def check_need(need: Need, available: int | None, dtype: str) -> None:
    """Raise :class:`SettingsError` naming the fix when ``need`` exceeds ``available`` bytes."""
    if available is None:
        return
    if need.weights > available:
        halve = "--dtype bfloat16 (half of float32), " if dtype == "float32" else ""
        raise SettingsError(
            f"the model needs about {need.weights / GIB:.1f} GiB in {dtype} (its weights and the process) and this machine "
            f"has {available / GIB:.1f} GiB available: use {halve}--quantize 8bit/4bit (analysis only), a smaller model, "
            "or close other programs"
        )
    if need.weights + need.batch > available:
        per_row = need.batch / max(1, need.rows)
        fits = max(1, int((available - need.weights) // max(1.0, per_row)))
        raise SettingsError(
            f"batches of {need.rows} rows need about {need.batch / GIB:.1f} GiB beside the model's {need.weights / GIB:.1f} GiB, "
            f"and this machine has {available / GIB:.1f} GiB available: set --{need.setting.replace('_', '-')} {fits} "
            "(or fewer), or close other programs"
        )
