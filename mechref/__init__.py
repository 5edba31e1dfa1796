"""mechref: find, remove, add and explain the refusal direction of chat language models.

Built on TransformerLens 4 (``TransformerBridge``). The names below load on first use, so
``import mechref`` is fast::

    import mechref
    model = mechref.load_model()                       # the embedded Qwen2.5-Coder-1.5B-Instruct
    harmful, harmless = mechref.prompts("harmful", "train"), mechref.prompts("harmless", "train")
    direction = mechref.diff_in_means(model, harmful, harmless, layer=14)
    with direction.ablate(model):
        print(model.generate(mechref.prompts("harmful", "test").take(3)))

The façade's names and where each is documented:

* loading: :func:`~mechref.model.loading.load_model`, :func:`~mechref.model.loading.wrap_hf_model`,
  :class:`~mechref.model.loading.MechrefModel`, :class:`~mechref.model.chat.ChatFormatter`;
* directions: :class:`~mechref.directions.direction.Direction`,
  :func:`~mechref.directions.direction.diff_in_means`;
* prompts: ``prompts`` (:func:`mechref.data.prompts.bundled`), :func:`~mechref.data.prompts.load_prompt_file`;
* reading and running the model: :func:`~mechref.capture.capture_residual`, :func:`~mechref.generation.generate`,
  :func:`~mechref.attribution.direct_feature_attribution`, :func:`~mechref.scoring.refusal_score`;
* judging and counting: :func:`~mechref.judges.core.make_judge`, :class:`~mechref.rates.Rate`.

>>> import mechref
>>> "diff_in_means" in dir(mechref) and "Direction" in dir(mechref)
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mechref.framework import moved as _moved
from mechref.version import __version__

_moved.install()

# name -> module it lives in: the things users do most, one import away.
_FACADE = {
    "load_model": "mechref.model.loading",
    "wrap_hf_model": "mechref.model.loading",
    "MechrefModel": "mechref.model.loading",
    "ChatFormatter": "mechref.model.chat",
    "Direction": "mechref.directions.direction",
    "diff_in_means": "mechref.directions.direction",
    "prompts": "mechref.data.prompts",
    "load_prompt_file": "mechref.data.prompts",
    "capture_residual": "mechref.capture",
    "generate": "mechref.generation",
    "direct_feature_attribution": "mechref.attribution",
    "refusal_score": "mechref.scoring",
    "make_judge": "mechref.judges.core",
    "Rate": "mechref.rates",
}
# Façade names that differ from the name in their module.
_RENAMED = {"prompts": "bundled"}

__all__ = [
    "ChatFormatter",
    "Direction",
    "MechrefModel",
    "Rate",
    "__version__",
    "capture_residual",
    "diff_in_means",
    "direct_feature_attribution",
    "generate",
    "load_model",
    "load_prompt_file",
    "make_judge",
    "prompts",
    "refusal_score",
    "wrap_hf_model",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from mechref.attribution import direct_feature_attribution
    from mechref.capture import capture_residual
    from mechref.data.prompts import bundled as prompts
    from mechref.data.prompts import load_prompt_file
    from mechref.directions.direction import Direction, diff_in_means
    from mechref.generation import generate
    from mechref.judges.core import make_judge
    from mechref.model.chat import ChatFormatter
    from mechref.model.loading import MechrefModel, load_model, wrap_hf_model
    from mechref.rates import Rate
    from mechref.scoring import refusal_score


def __getattr__(name: str) -> Any:
    if name in _FACADE:
        value = getattr(importlib.import_module(_FACADE[name]), _RENAMED.get(name, name))
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'mechref' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_FACADE})
