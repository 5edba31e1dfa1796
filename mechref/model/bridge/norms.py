"""Leaner forwards for two bridge components, with the same results and the same hooks.

TransformerLens's bridge runs every HF module inside a component that fires hook points around
it. Two of those components do work on every call that a decoding step pays for even when nobody
listens, which a GPU feels most (it is launch-bound at these sizes) and a CPU feels at small
batches:

- **Normalizations.** To serve ``hook_scale`` and ``hook_normalized``, the bridge's norm computes
  the variance, the scale and the normalized stream in float32 and *then* calls the HF norm for the
  output it returns; with no hook on those two points the intermediates are thrown away. The lean
  forward calls the HF norm between ``hook_in`` and ``hook_out`` directly, which is what the bridge
  returns in that case (bit for bit), and hands the call to the bridge's forward whenever either
  point has a hook, so captures and edits of the scale or the normalized stream work unchanged.
- **Block keyword filter.** Each block call inspects the signature of the HF layer's ``forward``
  to drop keyword arguments it does not take; the signature never changes, so the lean filter
  remembers which names pass for each set of names it has seen.

Installed by :func:`mechref.model.loading.wrap_hf_model`; :func:`bridge_forwards` runs the bridge's own
forwards inside a block (the reference for tests and benchmarks).

>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2", n_layers=2)
>>> sum(uses_lean_norm(m) for m in model.bridge.modules())   # ln1, ln2 per block and the final norm
5
>>> with bridge_forwards(model):
...     sum(uses_lean_norm(m) for m in model.bridge.modules())
0
"""

from __future__ import annotations

import contextlib
import inspect
from types import MethodType
from typing import Any, Iterator

import torch
from torch import Tensor


def _norm_class() -> Any:
    from transformer_lens.model_bridge.generalized_components.normalization import NormalizationBridge

    return NormalizationBridge


def _block_class() -> Any:
    from transformer_lens.model_bridge.generalized_components.block import BlockBridge

    return BlockBridge


def covers_norm(component: Any) -> bool:
    """A norm whose bridge forward, with no hook on its scale or normalized stream, returns the HF
    norm's own output: the native-autograd path (or folded layer norms) around a real HF norm.
    Subclasses that change either forward keep theirs (as do norms on the from-scratch path, such
    as the parameter-free LNPre)."""
    base = _norm_class()
    kind = type(component)
    if not (
        isinstance(component, base)
        and kind.forward is base.forward
        and kind._hf_autograd_forward_with_hooks is base._hf_autograd_forward_with_hooks
    ):
        return False
    original = component._modules.get("_original_component")
    if original is None or isinstance(original, torch.nn.Identity):
        return False
    config = component.config
    return bool(component.use_native_layernorm_autograd or getattr(config, "layer_norm_folding", False))


def _lean_norm_forward(self: Any, hidden_states: Tensor, **kwargs: Any) -> Tensor:
    native = self.use_native_layernorm_autograd or getattr(self.config, "layer_norm_folding", False)
    if kwargs or not native or self.hook_scale.has_hooks() or self.hook_normalized.has_hooks():
        return type(self).forward(self, hidden_states, **kwargs)
    hidden_states = self.hook_in(hidden_states)
    result = self.original_component(hidden_states)
    if result.dtype != hidden_states.dtype:
        result = result.to(hidden_states.dtype)
    return self.hook_out(result)


def _cached_kwarg_filter(self: Any, kwargs: dict[str, Any], num_positional_args: int = 0) -> dict[str, Any]:
    """The block's keyword filter, with the names it keeps remembered per set of names."""
    key = (tuple(kwargs), num_positional_args)
    cache = self.__dict__.setdefault("_mechref_kwarg_names", {})
    if key not in cache:
        original = self.original_component
        if original is None:
            return kwargs
        try:
            parameters = inspect.signature(original.forward).parameters
        except (ValueError, TypeError):  # the bridge passes everything through then; so do we
            cache[key] = None
        else:
            if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
                cache[key] = None
            else:
                positional = set(list(parameters)[:num_positional_args])
                cache[key] = frozenset(k for k in kwargs if k in parameters and k not in positional)
    kept = cache[key]
    return kwargs if kept is None else {k: v for k, v in kwargs.items() if k in kept}


def install_lean_forwards(bridge: Any) -> int:
    """Give every norm :func:`covers_norm` accepts the lean forward and every block the remembering
    keyword filter; returns how many components changed."""
    changed = 0
    block_class = _block_class()
    for module in bridge.modules():
        # Set past the bridge's __setattr__, which hands unknown names to the wrapped HF module.
        if covers_norm(module):
            object.__setattr__(module, "forward", MethodType(_lean_norm_forward, module))
            changed += 1
        elif (
            isinstance(module, block_class) and type(module)._filter_kwargs_for_forward is block_class._filter_kwargs_for_forward
        ):
            object.__setattr__(module, "_filter_kwargs_for_forward", MethodType(_cached_kwarg_filter, module))
            changed += 1
    return changed


def uses_lean_norm(component: Any) -> bool:
    """Whether a norm component runs mechref's forward (installed by the fence) rather than the bridge's."""
    forward = component.__dict__.get("forward")
    return isinstance(forward, MethodType) and forward.__func__ is _lean_norm_forward


def _is_lean(component: Any, name: str) -> bool:
    method = component.__dict__.get(name)
    return isinstance(method, MethodType) and method.__func__ in (_lean_norm_forward, _cached_kwarg_filter)


@contextlib.contextmanager
def bridge_forwards(model: Any) -> Iterator[None]:
    """Run the bridge's own norm forwards and keyword filters inside the block."""
    removed = []
    for module in model.bridge.modules():
        for name in ("forward", "_filter_kwargs_for_forward"):
            if _is_lean(module, name):
                removed.append((module, name, module.__dict__.pop(name)))
    try:
        yield
    finally:
        for module, name, method in removed:
            object.__setattr__(module, name, method)
