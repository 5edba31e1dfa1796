"""Resumable runs: each stage of an analysis writes its artifacts with a manifest of the settings
that produced them; a later run with the same settings loads them instead of recomputing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, TypeVar

from mechref import __version__
from mechref.io import read_json, write_json

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.resume = resume
        self.resumed: list[str] = []

    def manifest_path(self, name: str) -> Path:
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
            # A result of another mechref version may come from other code: never reuse it.
            if previous.get("settings") == settings and previous.get("mechref_version") == __version__:
                logger.info("resuming stage %s from %s", name, self.folder)
                self.resumed.append(name)
                return load(self.folder)
            logger.info("settings of stage %s changed; recomputing", name)
            path.unlink()
        value = compute()
        save(value, self.folder)
        write_json(path, {"stage": name, "mechref_version": __version__, "settings": settings})
        return value
