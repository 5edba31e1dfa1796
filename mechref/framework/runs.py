"""Resumable runs: each stage of an analysis writes its artifacts with a manifest of the settings
that produced them; a later run with the same settings loads them instead of recomputing.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Callable, TypeVar

from mechref.framework.io import read_json, write_json
from mechref.framework.ownership import claim_output_folder
from mechref.version import __version__

logger = logging.getLogger(__name__)

T = TypeVar("T")


#: The installed libraries whose versions can change a computed number: part of every stage's code
#: version, so an upgrade recomputes, never resumes.
COMPUTING_DEPENDENCIES = ("torch", "transformers", "transformer-lens", "safetensors", "numpy", "gguf")


def dependency_versions() -> dict[str, str]:
    """The installed version of each of :data:`COMPUTING_DEPENDENCIES` ("absent" when not installed).

    >>> dependency_versions()["torch"] != "absent"
    True
    """
    out = {}
    for name in COMPUTING_DEPENDENCIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """mechref's version plus a hash of its Python sources, its bundled data and the versions of the
    libraries that compute with it (:data:`COMPUTING_DEPENDENCIES`).

    Stage manifests record it, so an artifact computed by other code (an edited checkout with the
    same version number included, or the same checkout after upgrading torch, transformers or
    TransformerLens) is never resumed.

    >>> code_version() == code_version() and code_version().startswith(__version__)
    True
    """
    root = Path(__file__).resolve().parents[1]  # the mechref package
    digest = hashlib.sha256()
    for name, version in dependency_versions().items():
        digest.update(f"{name}=={version}\n".encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".py", ".json", ".txt"}):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:16]}"


class Run:
    """An output folder whose stages are skipped when their manifest matches.

    >>> import tempfile
    >>> run = Run(tempfile.mkdtemp())
    >>> calls = []
    >>> def compute(): calls.append(1); return {"x": 1}
    >>> run.stage("demo", {"n": 3}, compute, save=lambda v, d: (d / "v.json").write_text(json.dumps(v)),
    ...           load=lambda d: json.loads((d / "v.json").read_text()))
    {'x': 1}
    >>> run.stage("demo", {"n": 3}, compute, save=lambda v, d: None, load=lambda d: json.loads((d / "v.json").read_text()))
    {'x': 1}
    >>> len(calls)   # the second call was resumed from disk
    1
    """

    def __init__(self, folder: str | Path | None, resume: bool = True):
        # No folder: every stage is computed and nothing is written (a run held in memory only).
        # The folder is checked before anything is written: one holding files mechref did not
        # write is refused (see mechref.framework.ownership), never written into.
        self.folder = claim_output_folder(folder) if folder is not None else None
        self.resume = resume
        self.resumed: list[str] = []

    def manifest_path(self, name: str) -> Path:
        """Where stage ``name``'s manifest is written; an error for a run without a folder."""
        if self.folder is None:
            raise ValueError("this run keeps nothing on disk (no folder)")
        return self.folder / f"{name}.manifest.json"

    def stage(
        self,
        name: str,
        settings: dict,
        compute: Callable[[], T],
        save: Callable[[T, Path], object],
        load: Callable[[Path], T],
    ) -> T:
        """Return the stage's result: loaded when its manifest matches ``settings``, else computed and saved.

        The manifest is written last, after the artifacts, so a stage interrupted half-way is
        recomputed rather than half-loaded.
        """
        settings = json.loads(json.dumps(settings, default=str))
        if self.folder is None:
            return compute()
        path = self.manifest_path(name)
        if self.resume and path.is_file():
            previous = read_json(path)
            # A result of other code (another version, or an edited checkout) is never reused.
            if previous.get("settings") == settings and previous.get("code_version") == code_version():
                logger.info("resuming stage %s from %s", name, self.folder)
                self.resumed.append(name)
                return load(self.folder)
            logger.info("settings of stage %s changed; recomputing", name)
            path.unlink()
        value = compute()
        save(value, self.folder)
        write_json(path, {"stage": name, "mechref_version": __version__, "code_version": code_version(), "settings": settings})
        return value
