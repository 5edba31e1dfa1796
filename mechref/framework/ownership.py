"""What mechref may write over: only what it wrote itself.

Every output folder mechref writes into carries a small marker file, :data:`RUN_MARKER`; an
exported model carries ``mechref_edit.json``; a suffix file carries ``mechref_version``. Before
any computation the command line (and each ``run_*`` library call) checks its targets with the
functions here, so a typo in ``--out`` or ``--export-model`` costs one error line, never a
folder of someone else's files.

>>> import tempfile, pathlib
>>> home = pathlib.Path(tempfile.mkdtemp())
>>> claim_output_folder(home / "run")  # a new folder: created and marked as mechref's
PosixPath('...run')
>>> (home / "notes").mkdir(); _ = (home / "notes" / "thesis.tex").write_text("...")
>>> check_output_folder(home / "notes")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mechref.errors.OutputTargetError: output folder ...notes holds files mechref did not write (thesis.tex); ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mechref.errors import OutputTargetError
from mechref.version import __version__

#: The file that marks a folder as mechref's output (written first, read before anything is replaced).
RUN_MARKER = "mechref-run.json"
EXPORT_MANIFEST = "mechref_edit.json"


def _listing(folder: Path, limit: int = 3) -> str:
    names = sorted(p.name for p in folder.iterdir())
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _contains_cwd(path: Path) -> bool:
    """True when ``path`` is the working directory or one of its parents."""
    here = Path.cwd().resolve()
    target = path.resolve()
    return target == here or target in here.parents


def is_mechref_folder(folder: str | Path) -> bool:
    """True for a folder mechref marked as its own, or an older run folder of stage manifests."""
    folder = Path(folder)
    if (folder / RUN_MARKER).is_file():
        return True
    # Run folders written before the marker existed: recognised by their stage manifests.
    for manifest in folder.glob("*.manifest.json"):
        try:
            if "mechref_version" in json.loads(manifest.read_text(encoding="utf-8")):
                return True
        except (OSError, ValueError):
            continue
    return False


def check_output_folder(folder: str | Path) -> Path:
    """Raise unless ``folder`` is absent, empty, or a folder mechref wrote (then writing there resumes it)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputTargetError(f"output folder {folder} is a file; choose a folder name with --out")
    if folder.is_dir() and any(folder.iterdir()) and not is_mechref_folder(folder):
        raise OutputTargetError(
            f"output folder {folder} holds files mechref did not write ({_listing(folder)}); "
            "choose a new or empty folder with --out"
        )
    return folder


def claim_output_folder(folder: str | Path) -> Path:
    """Check ``folder`` (see :func:`check_output_folder`), create it and mark it as mechref's."""
    folder = check_output_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / RUN_MARKER
    if not marker.exists():
        # Written directly (not via io.atomic_path) because io imports nothing from here; the
        # marker is tiny and its content is informational only: its presence is what counts.
        marker.write_text(json.dumps({"written_by": "mechref", "mechref_version": __version__}) + "\n", encoding="utf-8")
    return folder


def check_export_target(path: str | Path, overwrite: bool = False) -> Path:
    """Raise unless ``path`` may receive an exported model folder.

    Allowed: a path that does not exist, an empty folder, or, with ``overwrite``, a previous
    mechref export (recognised by its ``mechref_edit.json``). Never the working directory or a
    parent of it.
    """
    path = Path(path)
    if _contains_cwd(path):
        raise OutputTargetError(f"cannot export into {path}: it is the working directory or holds it; give a new folder name")
    if not path.exists():
        return path
    if not path.is_dir():
        raise OutputTargetError(f"export target {path} is a file; give a new folder name")
    if not any(path.iterdir()):
        return path
    if not (path / EXPORT_MANIFEST).is_file():
        raise OutputTargetError(
            f"export target {path} holds files mechref did not write ({_listing(path)}); give a new or empty folder"
        )
    if not overwrite:
        raise OutputTargetError(f"export target {path} holds an earlier mechref export; pass --overwrite to replace it")
    return path


def check_output_file(path: str | Path, marker_keys: tuple[str, ...] = ("mechref_version",)) -> Path:
    """Raise unless ``path`` is absent or a JSON file mechref wrote (an object holding one of ``marker_keys``)."""
    path = Path(path)
    if path.is_dir():
        raise OutputTargetError(f"output {path} is a folder; give a file name such as {path / 'suffix.json'}")
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            ours = isinstance(data, dict) and any(key in data for key in marker_keys)
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise OutputTargetError(f"output file {path} exists and was not written by mechref; give another file name")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise OutputTargetError(f"cannot write {path}: {parent} is a file")
    if not os.access(parent if parent.exists() else Path.cwd(), os.W_OK):
        raise OutputTargetError(f"cannot write {path}: {parent} is not writable")
    return path
