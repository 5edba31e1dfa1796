"""The fence around mechref's replacements of TransformerLens bridge forwards: slower, never wrong.

:mod:`~mechref.model.bridge.attention` and :mod:`~mechref.model.bridge.norms` compute what the
bridge's own forwards compute, and call some of the bridge's private members to do it. If
TransformerLens changed what those forwards do while the names survived (a new hook point, a fix
to a mask), mechref's copies would go on computing the old thing and hooks on the new points would
never fire. So the copies are installed only where the bridge is the one they were verified on:

* the installed TransformerLens version is one of :data:`VERIFIED_VERSIONS`, and
* the source of every bridge member they replace or call hashes to what it was when verified
  (:data:`VERIFIED_SOURCES`).

On any mismatch nothing is installed, the bridge's own forwards run (the same numbers, slower
decoding), and one warning says why and what to do. ``MECHREF_BRIDGE_FORWARDS=bridge`` turns the
replacements off on purpose.

>>> fence_problems() == []   # on the verified TransformerLens
True
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import logging
import os
import warnings
from typing import Any

from torch import Tensor

from mechref.model.bridge.attention import install_grouped_attention
from mechref.model.bridge.direct import install_direct_blocks
from mechref.model.bridge.norms import install_lean_forwards

logger = logging.getLogger(__name__)

#: TransformerLens versions the replacements were checked on, member by member (tests/unit/model/bridge).
VERIFIED_VERSIONS = ("4.3.0",)

_COMPONENTS = "transformer_lens.model_bridge.generalized_components"
_ATTENTION = f"{_COMPONENTS}.position_embeddings_attention.PositionEmbeddingsAttentionBridge"
_NORM = f"{_COMPONENTS}.normalization.NormalizationBridge"
_BLOCK = f"{_COMPONENTS}.block.BlockBridge"

#: "class path.member" -> the first 16 hex digits of the SHA-256 of the member's source, as verified.
#: Every bridge member the replacements copy (forward), call (the private helpers) or depend on to
#: declare hook points (__init__). Regenerate with `python -m mechref.model.bridge.fence` after
#: verifying a new TransformerLens (the every-hook-point tests must pass on it first).
VERIFIED_SOURCES = {
    f"{_ATTENTION}.__init__": "bb144350e2d2fa8a",
    f"{_ATTENTION}.forward": "792c3e1b665a0ae2",
    f"{_ATTENTION}._apply_position_embedding_hooks": "924520793984aeac",
    f"{_ATTENTION}._update_kv_cache": "66fb90d2e4ab1f14",
    f"{_ATTENTION}._apply_reconstruct_attention_mask": "97b1cb2273b7ca84",
    f"{_ATTENTION}._masked_softmax": "17e525a99e3b1b60",
    f"{_ATTENTION}._scrub_compatibility_pattern_nans": "cd665a9ff5fc535e",
    f"{_NORM}.__init__": "8fbdde1e1c12fccf",
    f"{_NORM}.forward": "bdc0cd3ff1c5caed",
    f"{_NORM}._hf_autograd_forward_with_hooks": "6937e584f90ada1e",
    f"{_BLOCK}.forward": "2fe2d0163f4938ee",
    f"{_BLOCK}._filter_kwargs_for_forward": "e0d40dae17cdc0f0",
    f"{_BLOCK}._maybe_wire_capture_hooks": "7c49d94a62e44d17",
    f"{_BLOCK}._check_stop_at_layer": "1279c241aaffd794",
    f"{_BLOCK}._maybe_inject_start_residual": "110b4d8ff3fc40cd",
    f"{_BLOCK}._apply_output_hook": "25bfb8fc2150db72",
    f"{_BLOCK}._is_standalone_hidden_state_call": "5f0ad412efbb1b1b",
}


def source_hash(qualified: str) -> str:
    """The hash of the source of ``module.Class.member`` as installed ("missing" when it is gone)."""
    path, _, member = qualified.rpartition(".")
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        source = inspect.getsource(inspect.getattr_static(cls, member))
    except (ImportError, AttributeError, OSError, TypeError):
        return "missing"
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def transformer_lens_version() -> str:
    """The installed TransformerLens version (``absent`` when it is not installed)."""
    try:
        return importlib.metadata.version("transformer-lens")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a dependency
        return "absent"


def fence_problems() -> list[str]:
    """Why the replacements must not be installed here, one sentence each; empty when they may."""
    problems = []
    version = transformer_lens_version()
    if version not in VERIFIED_VERSIONS:
        problems.append(f"TransformerLens {version} is not one they were verified on ({', '.join(VERIFIED_VERSIONS)})")
    changed = [name for name, digest in VERIFIED_SOURCES.items() if source_hash(name) != digest]
    if changed:
        problems.append(
            "the source of "
            + ", ".join(name.rpartition(".")[0].rpartition(".")[2] + "." + name.rpartition(".")[2] for name in changed)
            + " changed"
        )
    return problems


@functools.lru_cache(maxsize=1)
def _warn_once(problems: tuple[str, ...]) -> None:
    message = (
        "mechref runs TransformerLens's own attention and norm forwards (same results, slower decoding): "
        + "; ".join(problems)
        + f". For the faster forwards install a verified TransformerLens: pip install 'transformer-lens=={VERIFIED_VERSIONS[-1]}'"
    )
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    logger.warning(message)


def replacements_enabled() -> bool:
    """Whether :func:`install_bridge_forwards` installs mechref's forwards in this process (warns once when
    the fence keeps them out)."""
    if os.environ.get("MECHREF_BRIDGE_FORWARDS", "").strip().lower() == "bridge":
        return False
    problems = fence_problems()
    if problems:
        _warn_once(tuple(problems))
        return False
    return True


def _contiguous(x: Tensor, hook: Any = None) -> Tensor:
    return x.contiguous()


def install_bridge_forwards(bridge: Any) -> dict[str, int]:
    """Everything mechref sets up on a freshly booted bridge; returns how many components each
    replacement took (zeros when the fence keeps them out).

    The unembedding's input is made contiguous through a permanent hook on its public hook point
    (not a replacement): when only the last position's logits are computed, the hidden state is a
    strided slice, and torch's CPU ``linear`` then copies the whole ``[d_vocab, d_model]`` matrix
    once per row (85% of a forward pass of the embedded model); a contiguous copy of the slice
    costs nothing by comparison.
    """
    unembed = getattr(bridge, "unembed", None)
    hook_point = getattr(unembed, "hook_in", None)
    if hook_point is not None:
        hook_point.add_hook(_contiguous, dir="fwd", is_permanent=True)
    if not replacements_enabled():
        return {"attention": 0, "norms_and_blocks": 0, "direct_blocks": 0}
    return {
        "attention": install_grouped_attention(bridge),
        "norms_and_blocks": install_lean_forwards(bridge),
        "direct_blocks": install_direct_blocks(bridge),
    }


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    for name in VERIFIED_SOURCES:
        print(f'    f"{name}": "{source_hash(name)}",')
