"""Where mechref keeps what it computes once: dequantized models, directions, activations."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache root: ``$MECHREF_CACHE`` if set, else ``~/.cache/mechref``.

    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"MECHREF_CACHE": "/tmp/mechref-doc"}):
    ...     str(cache_dir())
    '/tmp/mechref-doc'
    """
    root = os.environ.get("MECHREF_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mechref"
