"""Blocks that nothing observes run as plain Hugging Face layers, with the bridge's arithmetic.

TransformerLens's bridge wraps every module of a Hugging Face layer in a component that fires hook
points around it (a block has about fifty). Each of those calls costs microseconds of Python
whether or not anything listens; where arithmetic is cheap (a small model, one row, any GPU) that
cost is most of a decoding step (a 28-layer width-64 model: 19.2 ms a step through the bridge, 7.3 ms
in plain Hugging Face, ``benchmarks/results/devices_cpu.json``; now ``benchmarks/bench_overhead.py``).

:func:`install_direct_blocks` gives every block a forward that first asks whether anything could
observe or change what happens inside it: a hook on any of its hook points, any PyTorch hook on
any bridge module inside it (other than the bridge's own input captures, which only feed hook
points), a global module hook, training mode, an attention setting that adds hook points (per-head
results, split inputs), or the bridge's ``stop_at_layer``/``start_at_layer``. If nothing does, the
block runs its *direct* layer: a shallow copy of the Hugging Face layer whose children are the
Hugging Face modules the bridge wraps, sharing every parameter, buffer and hook table with them (an
edit of the weights, in place or by a new ``Parameter``, is seen by both). Otherwise, or when a
module was swapped in since the copy was made (it is then made again), the bridge's forward runs,
and every hook point fires as it always did. When no block is observed the Hugging Face model
itself runs as such a copy (no bridge call at all); one check covers the model.

The copy's attention computes the heads with :func:`mechref.model.bridge.attention.attend`, the
arithmetic of mechref's grouped attention (registered with transformers as an attention
implementation), so a block gives the same numbers, bit for bit, run directly or through the bridge,
hooked anywhere or nowhere: no result depends on which layers are hooked
(``tests/unit/model/bridge/test_direct.py``, float32 and bfloat16). Hence only the blocks whose
attention runs that grouped forward are covered (Qwen2, Llama, Mistral, Mixtral, Qwen2-MoE); the
others keep the bridge's forward. ``MECHREF_BRIDGE_FORWARDS=bridge`` turns this off with the other
replacements (:mod:`mechref.model.bridge.fence`); :func:`bridge_blocks` inside a ``with`` block.

>>> import torch
>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2", n_layers=2)
>>> [uses_direct_block(block) for block in model.bridge.blocks]
[True, True]
>>> ids = torch.tensor([[3, 4, 5]])
>>> direct = model.forward(ids)
>>> with bridge_blocks(model):
...     through_bridge = model.forward(ids)
>>> torch.equal(direct, through_bridge)
True
"""

from __future__ import annotations

import contextlib
import copy
import operator
from types import MethodType
from typing import Any, Iterator

import torch
from torch import nn

from mechref.model.bridge import attention

_HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _bridge_base() -> Any:
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    return GeneralizedComponent


def _block_class() -> Any:
    from transformer_lens.model_bridge.generalized_components.block import BlockBridge

    return BlockBridge


class DirectLayer:
    """A block's Hugging Face layer with the bridge's components taken out, and what it was made from.

    ``edges`` records every (module, child name, child) the copy was built from; :meth:`current`
    says whether the layer still has them (a module swapped in since, e.g. an adapter, makes it stale).
    ``tables`` are the hook tables of the bridge's modules inside the block: a hook in any of them
    sends a call to the bridge. Both are kept as flat tuples, so that the checks every call makes run
    in C (a few microseconds a block) rather than in a Python loop.
    """

    def __init__(self, root: torch.nn.Module):
        base, block_class = _bridge_base(), _block_class()
        self.whole = not isinstance(root, base)  # the Hugging Face model itself, not one block
        self.blocks = tuple(m for m in root.modules() if isinstance(m, block_class)) if self.whole else (root,)
        # The bridge registers its input captures on its norms on a block's first call; wired now, they
        # are told apart from hooks someone added (they only feed hook points, which have hooks then).
        for block in self.blocks:
            block._maybe_wire_capture_hooks()
        allowed = self.own_hooks(root, base)
        # Zones: for the model, 0 is outside every block (embedding, final norm, unembedding) and i + 1 is
        # block i (its own hooks included: a block run directly skips its call); for a block, 0 is its
        # inside and 1 its boundary (hook_in and hook_out, which a direct run can fire itself).
        zone_of: dict[int, int] = {}
        if self.whole:
            for i, block in enumerate(self.blocks):
                zone_of.update((id(m), i + 1) for m in block.modules())
        else:
            zone_of.update((id(getattr(root, name)), 1) for name in ("hook_in", "hook_out"))
        n_zones = len(self.blocks) + 1 if self.whole else 2
        tables: list[list[dict]] = [[] for _ in range(n_zones)]
        self.capture_tables: list[tuple[dict, int]] = []
        for module in root.modules():
            if module is root or not (isinstance(module, base) or type(module).__name__ == "HookPoint"):
                continue  # hooks on the root fire around this forward; on HF modules, inside the copy
            for name in _HOOK_TABLES:
                table = module.__dict__[name]
                held = allowed.intersection(table)
                if held:
                    self.capture_tables.append((table, len(held)))
                else:
                    tables[zone_of.get(id(module), 0)].append(table)
        self.tables = tuple(tuple(zone) for zone in tables)
        edges: list[tuple[dict, str, torch.nn.Module]] = []
        self.twins: list[tuple[torch.nn.Module, torch.nn.Module]] = []  # (copy, original): train/eval must agree
        self.attention: list[Any] = []  # the bridge's attention components inside
        self.slots: list[tuple[dict, str, torch.nn.Module, torch.nn.Module]] = []  # (container, name, block, its direct copy)
        self.pattern: tuple[bool, ...] | None = None  # which blocks the slots hold now (the model's copy)
        # Where the weights are decides the attention kernel (attend); a move makes the copy stale.
        self.anchor = next(root.parameters(), None)
        self.device_type = self.anchor.device.type if self.anchor is not None else "cpu"
        top: torch.nn.Module = root if self.whole else root._modules["_original_component"]  # type: ignore[assignment]
        self.layer = self._strip(top, base, edges)
        if self.whole:  # the copy runs the class's forward, not the direct one installed on the original
            self.layer.__dict__.pop("forward", None)
        self.edge_tables = tuple(e[0] for e in edges)
        self.edge_names = tuple(e[1] for e in edges)
        self.edge_children = tuple(e[2] for e in edges)
        self.stale = False

    def own_hooks(self, root: torch.nn.Module, base: Any) -> set[int]:
        """The ids of the hooks mechref and the bridge keep on the root's modules that change nothing a
        direct run must reproduce: each block's input captures, and mechref's contiguous copy of the
        unembedding's input (:func:`mechref.model.bridge.fence.install_bridge_forwards`), whose effect
        the direct model's own head keeps (``_ContiguousInput``)."""
        ids = {handle.id for block in self.blocks for handle in getattr(block, "_capture_hook_handles", ())}
        for module in root.modules():
            for handle in getattr(module, "fwd_hooks", ()) if type(module).__name__ == "HookPoint" else ():
                if handle.is_permanent and getattr(handle.user_hook, "__name__", "") == "_contiguous":
                    ids.add(handle.hook.id)
        return ids

    def _strip(self, module: torch.nn.Module, base: Any, edges: list) -> torch.nn.Module:
        """``module`` with every bridge component below it replaced by the module it wraps (copies
        only the modules on the way to a component; every other module is the original object)."""
        if isinstance(module, base):
            inner = module._modules.get("_original_component")
            if inner is None:
                raise ValueError(f"{type(module).__name__} wraps no module")
            edges.append((module._modules, "_original_component", inner))
            if attention.uses_grouped_attention(module):
                self.attention.append(module)
                return self._attention_twin(self._strip(inner, base, edges), inner, module)
            stripped = self._strip(inner, base, edges)
            if type(module).__name__ == "UnembeddingBridge" and isinstance(stripped, nn.Linear):
                return _ContiguousInput(stripped)
            return stripped
        children = dict(module._modules)
        bare: dict[str, torch.nn.Module | None] = {}
        for name, child in children.items():
            edges.append((module._modules, name, child))
            bare[name] = None if child is None else self._strip(child, base, edges)
            if self.whole and child in self.blocks:
                self.slots.append((bare, name, child, bare[name]))  # type: ignore[arg-type]
        if all(bare[name] is children[name] for name in children):
            return module
        twin = copy.copy(module)  # shares _parameters, _buffers and the hook tables with the original
        object.__setattr__(twin, "_modules", bare)
        self.twins.append((twin, module))
        return twin

    def _attention_twin(self, stripped: torch.nn.Module, original: torch.nn.Module, component: Any) -> torch.nn.Module:
        """The Hugging Face attention module, computing its heads with the bridge's own arithmetic
        (:func:`mechref.model.bridge.attention.attend`, registered as an attention implementation), so
        that a block run directly and one run through the bridge give the same numbers."""
        twin = stripped if stripped is not original else copy.copy(original)
        if twin is not stripped:
            self.twins.append((twin, original))
        config: Any = copy.copy(original.config)
        # The internal name, not the property: its setter also sets the sub-configs, which the copy shares.
        config._attn_implementation_internal = DIRECT_ATTENTION
        twin.__dict__["config"] = config
        twin.__dict__["_mechref_component"] = component
        return twin

    def current(self) -> bool:
        """Whether every module the copy was made from still holds the same children (and the copies
        are in the originals' train or eval mode, on the same kind of device)."""
        return (
            not self.stale
            and all(map(operator.is_, map(dict.get, self.edge_tables, self.edge_names), self.edge_children))
            and all(twin.training == original.training for twin, original in self.twins)
            and (self.anchor is None or self.anchor.device.type == self.device_type)
        )

    def observed(self) -> tuple[bool, ...] | None:
        """Per zone, whether anything could observe or change it (see the module docstring); None
        when the whole root must run through the bridge."""
        for block in self.blocks:
            state = block.__dict__
            if state.get("_stop_at_layer_idx") is not None or state.get("_start_at_layer_idx") is not None:
                return None
        if _GLOBAL_TABLES[0] or _GLOBAL_TABLES[1] or _GLOBAL_TABLES[2] or _GLOBAL_TABLES[3]:
            return None
        # Dropout, per-head results or split inputs: the bridge's attention forward handles those.
        if any(original.training for _, original in self.twins) or not all(map(attention.settings_allow, self.attention)):
            return None
        if any(len(table) != held for table, held in self.capture_tables):
            # Captures re-wired, or a hook added beside one: look closely; if only captures are there,
            # snapshot the tables again on the next call.
            captures = {handle.id for block in self.blocks for handle in getattr(block, "_capture_hook_handles", ())}
            if any(key not in captures for table, _ in self.capture_tables for key in table):
                return None
            self.stale = True
        return tuple(map(any, self.tables))

    def holding(self, pattern: tuple[bool, ...]) -> torch.nn.Module:
        """The model's copy with each observed block's slot holding the block itself (it runs through
        the bridge, or its boundary hooks around its own direct copy) and every other its direct copy."""
        if pattern != self.pattern:
            for (container, name, block, direct), seen in zip(self.slots, pattern):
                container[name] = block if seen else direct
            self.pattern = pattern
        return self.layer


#: The name of ``_direct_attention`` among transformers' attention implementations.
DIRECT_ATTENTION = "mechref_bridge_arithmetic"


def _direct_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A transformers attention implementation that computes the heads as the module's bridge
    component does (its mask, softmax, grouped products or fused kernel), without its hook points."""
    component = module.__dict__["_mechref_component"]
    if scaling is None:
        scaling = getattr(module, "scaling", query.shape[-1] ** -0.5)
    mixed, pattern = attention.attend(component, query, key, value, attention_mask, scaling, hooked=False)
    weight = getattr(getattr(module, "o_proj", None), "weight", None)
    # As the grouped forward casts (a float32 rotary promotes the heads), never to quantized integers.
    if isinstance(weight, torch.Tensor) and weight.dtype.is_floating_point and mixed.dtype != weight.dtype:
        mixed = mixed.to(weight.dtype)
    return mixed, pattern


def _register_direct_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(DIRECT_ATTENTION, _direct_attention)


# torch's global module hooks: any of them must see every module's call.
_GLOBAL_TABLES = (
    nn.modules.module._global_forward_hooks,
    nn.modules.module._global_forward_pre_hooks,
    nn.modules.module._global_backward_hooks,
    nn.modules.module._global_backward_pre_hooks,
)


class _ContiguousInput(torch.nn.Module):
    """The unembedding with a contiguous input, as mechref's permanent hook gives the bridge's: with
    logits for the last position only, the hidden state is a strided slice, and torch's CPU ``linear``
    then copies the whole ``[d_vocab, d_model]`` matrix once per row."""

    def __init__(self, head: nn.Linear):
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden.contiguous())


def _observed(block: Any, direct: DirectLayer) -> tuple[bool, ...] | None:
    return direct.observed()


def _direct_block_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
    direct: DirectLayer | None = self.__dict__.get("_mechref_direct")
    if direct is None or not direct.current():
        direct = DirectLayer(self)
        object.__setattr__(self, "_mechref_direct", direct)
    zones = _observed(self, direct)
    if zones is None or zones[0]:
        return type(self).forward(self, *args, **kwargs)
    if zones[1]:  # hooks on the residual stream entering or leaving: fired as the bridge fires them
        args, kwargs = self._hook_input_hidden_states(args, kwargs)
    kwargs = self._filter_kwargs_for_forward(kwargs, len(args))
    output = direct.layer(*args, **kwargs)
    standalone = self._is_standalone_hidden_state_call(args, kwargs)
    if zones[1]:
        return self._apply_output_hook(output, force_tuple_for_bare_tensor=standalone)
    # The bridge hands a bare tensor back as a one-element tuple to a standalone call (block(x)).
    return (output,) if isinstance(output, torch.Tensor) and standalone else output


def _direct_model_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
    """The Hugging Face model's forward: its direct copy, whose observed blocks (if any) run as
    blocks, when nothing outside the blocks is observed; else the model's own forward through the
    bridge, whose blocks then choose one by one."""
    direct: DirectLayer | None = self.__dict__.get("_mechref_direct")
    if direct is None or not direct.current():
        direct = DirectLayer(self)
        self.__dict__["_mechref_direct"] = direct
    zones = _observed(self, direct)
    if zones is None or zones[0]:
        return type(self).forward(self, *args, **kwargs)
    return type(self).forward(direct.holding(zones[1:]), *args, **kwargs)  # inside this call: no second __call__


def covers_block(module: Any) -> bool:
    """A block whose forward is the bridge's own ``BlockBridge.forward`` around a Hugging Face layer
    (subclasses with forwards of their own keep them)."""
    block = _block_class()
    if not (
        isinstance(module, block)
        and type(module).forward is block.forward
        and module._modules.get("_original_component") is not None
    ):
        return False
    # A block whose attention runs mechref's grouped forward: its arithmetic is what the direct copy's
    # attention runs too (attend). Under the bridge's own attention (other families) a direct block
    # would compute the heads another way than the same block hooked, and results would depend on
    # which blocks are hooked: those keep the bridge's forward.
    return any(attention.uses_grouped_attention(m) for m in module.modules())


def install_direct_blocks(bridge: Any) -> int:
    """Give every block :func:`covers_block` accepts the direct forward, and the Hugging Face model the
    whole-model one when every block has it; returns how many blocks."""
    _register_direct_attention()
    changed, blocks = 0, 0
    for module in bridge.modules():
        if isinstance(module, _block_class()):
            blocks += 1
        if covers_block(module):
            # Set past the bridge's __setattr__, which hands unknown names to the wrapped HF module.
            object.__setattr__(module, "forward", MethodType(_direct_block_forward, module))
            changed += 1
    model = getattr(bridge, "original_model", None)
    if changed and changed == blocks and isinstance(model, torch.nn.Module) and "forward" not in model.__dict__:
        model.__dict__["forward"] = MethodType(_direct_model_forward, model)
    return changed


def uses_direct_block(block: Any) -> bool:
    """Whether a block (or the Hugging Face model, for the whole model) runs its direct copy when
    nothing observes it (installed by the fence)."""
    forward = block.__dict__.get("forward")
    return isinstance(forward, MethodType) and forward.__func__ in (_direct_block_forward, _direct_model_forward)


@contextlib.contextmanager
def bridge_blocks(model: Any) -> Iterator[None]:
    """Run every block through the bridge inside the block, observed or not (the reference of tests
    and benchmarks)."""
    modules = [*model.bridge.modules()]
    if isinstance(getattr(model.bridge, "original_model", None), torch.nn.Module):
        modules.append(model.bridge.original_model)
    removed = [(m, m.__dict__.pop("forward")) for m in dict.fromkeys(modules) if uses_direct_block(m)]
    try:
        yield
    finally:
        for module, forward in removed:
            module.__dict__["forward"] = forward
