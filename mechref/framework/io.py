"""Atomic artifact writing and content fingerprints.

Everything mechref writes goes to a temporary name in the destination folder first and is
renamed into place only once complete, so an interrupted run never leaves a half-written file
that a later run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mechref.errors import DataFormatError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, replace_folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Works for files and folders alike: whatever the block creates at the yielded path
    replaces ``path`` in one rename. On error the temporary is removed and the error propagates.
    An existing non-empty folder at ``path`` is replaced only with ``replace_folder=True`` (the
    caller has checked that mechref wrote it); otherwise :class:`FileExistsError` is raised and
    the folder is left as it was.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink() and any(path.iterdir()) and not replace_folder:
        raise FileExistsError(f"{path} is a folder with files in it; mechref does not replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target_tmp = tmp / path.name
    try:
        yield target_tmp
        if not target_tmp.exists():
            raise FileNotFoundError(f"nothing was written to {target_tmp} for {path}")
        if target_tmp.is_file():
            # Temporary files may be created private (0600); give the artifact normal permissions.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(target_tmp, 0o666 & ~umask)
        if path.is_dir() and not path.is_symlink():
            # Move the old folder into the temporary folder first, so that it is deleted only
            # once the new one is in place (a crash in between leaves both, never neither).
            os.replace(path, tmp / "previous")
        os.replace(target_tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def held_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a lock file, created if missing) for the block.

    Processes that build the same cache entry (two test workers, two notebooks) take turns: the
    second finds the first's finished entry instead of racing it. Where the platform has no
    ``fcntl`` (Windows) the block runs unlocked.

    >>> import tempfile, pathlib
    >>> with held_lock(pathlib.Path(tempfile.mkdtemp()) / "x.lock"):
    ...     pass
    """
    try:
        import fcntl
    except ImportError:  # no advisory locks: builds are still atomic, only not serialized
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n", encoding="utf-8")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document at ``path`` (UTF-8)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write rows as JSON lines (one object a line), atomically.

    >>> import tempfile, pathlib
    >>> path = write_jsonl(pathlib.Path(tempfile.mkdtemp()) / "rows.jsonl", [{"a": 1}, {"a": "ü"}])
    >>> read_jsonl(path)
    [{'a': 1}, {'a': 'ü'}]
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
    return Path(path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON-lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_user_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file a user pointed mechref at; a missing file or bad JSON raises
    :class:`~mechref.errors.DataFormatError` naming the file."""

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{what} {path} is not valid JSON ({error})") from error


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Save tensors as safetensors, atomically (never pickles)."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, by name."""
    return load_file(str(path))


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 24) -> str:
    """The SHA-256 of a file's bytes, read in chunks (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(obj: Any) -> str:
    """A short, stable hash of any JSON-serialisable object (datasets, settings).

    >>> fingerprint(["a", "b"]) == fingerprint(["a", "b"])
    True
    >>> fingerprint(["a", "b"]) == fingerprint(["b", "a"])
    False
    """
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return str(obj).removeprefix("torch.")
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def read_tensor_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors file's header (empty if none)."""

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})
