"""Where a command's memory goes: the peak resident memory of each stage, measured by the kernel.

Every :class:`~mechref.framework.clock.StageClock` stage (and a command's model loading and report)
calls :func:`mark`: the resident-memory high-water mark since the previous mark is read from
``/proc/self/status`` (``VmHWM``) and credited to the stage that was running, then reset
(``/proc/self/clear_refs``), so each stage's peak is its own, exact (the kernel keeps it; no
sampling thread can miss a short spike) and costs microseconds. Where ``/proc`` cannot do this
(not Linux, a locked-down container), the peaks are the current resident memory at each mark,
flagged ``"exact": False``.

With ``MECHREF_MEMORY_LOG=FILE`` set, a command writes its stages' peaks to ``FILE`` (JSON) as it
exits; ``benchmarks/memory.py`` runs every command that way.

>>> log = MemoryLog()
>>> log.mark("load")
>>> block = bytearray(64 * 2**20)  # 64 MiB, touched
>>> log.mark("report")
>>> log.peaks["load"] >= 64 * 2**20 or not log.exact
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")
GIB = 2**30


def _status_kib(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def resident_bytes() -> int:
    """The process's resident memory now (0 where the system does not say)."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil missing or refused: no number rather than a wrong one
        return 0


def _reset_peak() -> bool:
    try:
        _CLEAR.write_text("5")  # 5: reset the resident-memory high-water mark (VmHWM)
        return True
    except OSError:
        return False


def give_back_freed() -> bool:
    """Collect garbage and return the C allocator's freed memory to the system; True where it could.

    glibc keeps freed blocks under its mapping threshold (which grows to 32 MiB as large blocks
    are freed: most of a small model's tensors) in its heaps for reuse, so a model deleted after
    a comparison still counted as resident memory, gigabytes of it, until the process ended.
    ``malloc_trim(0)`` hands those pages back. A no-op (False) where the C library has no such call.

    >>> give_back_freed() in (True, False)
    True
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def trim_heap() -> bool:
    """Return the C allocator's freed memory to the system, without collecting garbage: cheap enough
    (milliseconds) to call once per decoding step. True where the C library could.

    A decoding step frees the key/value cache it grew (``torch.cat`` makes each layer's a new tensor,
    one position longer) and the per-step tensors of any hooks; glibc reuses those blocks poorly,
    since each new request is a little larger than any block just freed. Measured on the embedded
    model (96 rows, 128 tokens, three hook edits; ``benchmarks/memory_decoding.py``): 1.36 GiB of
    anonymous memory above the model without trimming, 0.69 GiB trimmed every step, for 0.5 s of 56 s."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


_TRIM: list = []


def _malloc_trim():
    if not _TRIM:
        name = ctypes.util.find_library("c")
        try:
            _TRIM.append(ctypes.CDLL(name).malloc_trim if name else None)
        except (OSError, AttributeError):  # not glibc (macOS, musl without it): nothing to trim
            _TRIM.append(None)
    return _TRIM[0]


_PAGEMAP = Path("/proc/self/pagemap")
_MADV_DONTNEED = 4
# /proc/self/pagemap: one 64-bit entry per page; these bits say present, swapped, and mapped from a
# file's page cache (a page of a private file mapping that was written is an anonymous copy: bit 61 clear).
_PRESENT, _SWAPPED, _FILE_PAGE = 1 << 63, 1 << 62, 1 << 61


def drop_file_pages(tensor) -> bool:  # a torch.Tensor (torch is not imported by this module)
    """Drop a memory-mapped tensor's pages from resident memory where every one of them is still the
    file's own; True where none of its whole pages is resident afterwards.

    A model loaded from safetensors reads its weights from a private mapping of the file: a page is
    the page cache's until it is written. Dropped pages are read back from the file (the page cache,
    usually) the next time the tensor is used, so the tensor's values never change; a tensor with a
    written page (an edit in place, an anonymous copy) keeps all its pages, since dropping would lose
    the edit. A no-op (False) where the system cannot say (not Linux) or the tensor is not mapped.

    >>> import torch
    >>> drop_file_pages(torch.ones(4096))  # anonymous memory: never dropped
    False
    """
    import numpy as np

    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        return False
    page = os.sysconf("SC_PAGE_SIZE")
    begin = tensor.data_ptr()
    start, end = -(-begin // page) * page, (begin + tensor.numel() * tensor.element_size()) // page * page
    if end <= start:
        return False  # less than a page: nothing whole to drop
    try:
        with _PAGEMAP.open("rb") as handle:
            handle.seek(start // page * 8)
            entries = np.frombuffer(handle.read((end - start) // page * 8), dtype=np.uint64)
    except OSError:
        return False
    if len(entries) != (end - start) // page:
        return False
    present = (entries & np.uint64(_PRESENT)) != 0
    written = present & ((entries & np.uint64(_FILE_PAGE)) == 0)
    if written.any() or ((entries & np.uint64(_SWAPPED)) != 0).any():
        return False  # an anonymous page (written, or a copy): dropping it would lose it
    if not present.any():
        return True  # nothing resident to drop
    libc = ctypes.util.find_library("c")
    if libc is None:
        return False
    madvise = ctypes.CDLL(libc, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED) == 0


@dataclass
class MemoryLog:
    """Peak resident memory per stage, in bytes, in the order the stages ran (``peaks``).

    ``exact`` is False where the kernel's high-water mark could not be reset: then each stage's
    number is the resident memory at its end, a lower bound of its peak.
    """

    peaks: dict[str, int] = field(default_factory=dict)
    exact: bool = True
    _current: str | None = None

    def mark(self, stage: str | None) -> None:
        """Credit the peak since the last mark to the stage that ran, and start ``stage`` (None: stop).

        Between the two, what the stage freed is given back to the system (:func:`give_back_freed`):
        the next stage is charged for what is still alive, not for the allocator's spare pages."""
        hwm = _status_kib("VmHWM")
        peak = hwm * 1024 if hwm is not None else resident_bytes()
        if self._current is not None:
            self.peaks[self._current] = max(self.peaks.get(self._current, 0), peak)
        give_back_freed()
        self.exact = self.exact and hwm is not None and _reset_peak()
        self._current = stage

    @property
    def peak(self) -> int:
        """The highest stage peak so far."""
        return max(self.peaks.values(), default=0)

    def as_json(self) -> dict:
        """Whether the peaks are exact, the highest, and each stage's, in GiB."""
        return {
            "exact": self.exact,
            "peak_gib": round(self.peak / GIB, 3),
            "stages_gib": {k: round(v / GIB, 3) for k, v in self.peaks.items()},
        }


# One log per process: stages of nested runs (a direction computed on first use) land in it too.
LOG = MemoryLog()


def mark(stage: str | None) -> None:
    """Start ``stage`` in the process's memory log (see :class:`MemoryLog`)."""
    LOG.mark(stage)


def write_log(extra: dict | None = None) -> Path | None:
    """Write the process's log to ``$MECHREF_MEMORY_LOG`` when that is set; its path (else None)."""
    target = os.environ.get("MECHREF_MEMORY_LOG")
    if not target:
        return None
    LOG.mark(None)
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**LOG.as_json(), **(extra or {})}, indent=1), encoding="utf-8")
    return path
