"""Grouped-query attention without copying the keys and values once per query head.

TransformerLens's bridge computes attention itself, so that ``hook_attn_scores`` and
``hook_pattern`` see the pre- and post-softmax ``[batch, head, query, key]`` tensors. For a
grouped-query model (Qwen2.5: 12 query heads share 2 key/value heads) it first repeats every
cached key and value once per query head that reads it. While decoding with a cache that copy is
most of the step: at 100 rows and 200 cached positions, 75% of a step of the embedded model on a
CPU, and it grows with the context.

:func:`install_grouped_attention` gives each attention component of such a model a forward that
computes the same thing without the copy: the queries of the heads that share a key/value head
are stacked, so one matrix product per key/value head gives their scores. The scores tensor is the
same memory seen as ``[batch, head, query, key]``, so the bridge's own mask, softmax and hooks
(``hook_attn_scores``, ``hook_pattern``) run on it unchanged, and every other hook point fires
where it did. Each score is the same dot product as before, so the outputs are equal (tested
against the bridge's own forward for every family it applies to). Configurations it does not
cover (query/key norms, soft-capping, attention sinks, split or per-head inputs, partial or
interleaved rotary, attention results per head) keep the bridge's forward.

When no hook listens to ``hook_attn_scores`` or ``hook_pattern``, the product goes to torch's
fused kernel instead (``scaled_dot_product_attention`` with grouped heads), which never writes the
pattern out; a hook there takes the path above. On a CPU too: plain Hugging Face's default (that
kernel) was faster than the grouped products at every size measured (``benchmarks/bench_attention.py``
at 64 rows, ``benchmarks/bench_overhead.py`` at one). :func:`attend` is that choice and the
arithmetic after it, shared with the direct layers (:mod:`mechref.model.bridge.direct`).

>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2", n_layers=2)
>>> [uses_grouped_attention(block.attn) for block in model.bridge.blocks]
[True, True]
"""

from __future__ import annotations

import contextlib
from types import MethodType
from typing import Any, Iterator, Literal

import torch
from jaxtyping import Float
from torch import Tensor

# Bridge settings under which its attention does something the grouped forward does not.
_UNSUPPORTED_SETTINGS = (
    "use_split_qkv_input",
    "use_attn_in",
    "use_attn_result",
    "gated_q_proj",
    "rotary_interleaved_cos_sin",
    "rotary_adjacent_pairs",
    "qk_norm_after_rope",
)
# Attributes of the Hugging Face attention module that change the computation.
_UNSUPPORTED_MODULE_PARTS = ("key_multiplier", "sinks")
# Devices where the fused kernel replaces the grouped products when no hook reads the pattern.
FUSED_KERNEL_DEVICES = {"cuda", "mps", "cpu"}


def grouped_scores(
    query: Float[Tensor, "batch head query d_head"],
    key: Float[Tensor, "batch kv_head key d_head"],
    scaling: float,
) -> Float[Tensor, "batch head query key"]:
    """Attention scores of every query head against the key/value head it shares, without
    repeating the keys: head ``h`` reads key head ``h // (heads / kv_heads)``, as ``repeat_kv``
    has it.

    >>> q, k = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 5, 8)
    >>> repeated = k.repeat_interleave(2, dim=1)
    >>> torch.allclose(grouped_scores(q, k, 0.5), q @ repeated.transpose(-1, -2) * 0.5)
    True
    """
    batch, heads, queries, d_head = query.shape
    kv_heads = key.shape[1]
    stacked = query.reshape(batch, kv_heads, (heads // kv_heads) * queries, d_head)
    scores = torch.matmul(stacked, key.transpose(-2, -1)) * scaling
    return scores.view(batch, heads, queries, key.shape[2])


def grouped_mix(
    pattern: Float[Tensor, "batch head query key"],
    value: Float[Tensor, "batch kv_head key d_head"],
) -> Float[Tensor, "batch head query d_head"]:
    """The pattern-weighted values of each query head, reading the value head it shares.

    >>> p, v = torch.softmax(torch.randn(1, 4, 3, 5), -1), torch.randn(1, 2, 5, 8)
    >>> torch.allclose(grouped_mix(p, v), p @ v.repeat_interleave(2, dim=1))
    True
    """
    batch, heads, queries, keys = pattern.shape
    kv_heads = value.shape[1]
    stacked = pattern.reshape(batch, kv_heads, (heads // kv_heads) * queries, keys)
    return torch.matmul(stacked, value).view(batch, heads, queries, value.shape[-1])


def _bridge_attention_class() -> Any:
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
        PositionEmbeddingsAttentionBridge,
    )

    return PositionEmbeddingsAttentionBridge


def covers(component: Any) -> bool:
    """Whether the grouped forward computes what ``component``'s own forward computes: a plain
    rotary attention block (the class itself, no subclass) of a model with grouped key/value heads
    and none of the parts listed in the module docstring."""
    if type(component) is not _bridge_attention_class():
        return False
    hf_attn = component.original_component
    if hf_attn is None or getattr(hf_attn, "num_key_value_groups", 1) <= 1:
        return False
    if any(getattr(hf_attn, name, None) is not None for name in _UNSUPPORTED_MODULE_PARTS):
        return False
    if getattr(hf_attn, "attn_logit_softcapping", None) is not None:
        return False
    hf_config = getattr(hf_attn, "config", None)
    if getattr(hf_config, "clip_qkv", None) is not None:
        return False
    rope = getattr(hf_config, "rope_parameters", None)
    if isinstance(rope, dict) and rope.get("llama_4_scaling_beta") is not None:
        return False
    gate = component._modules.get("gate")
    if gate is not None and getattr(gate, "original_component", None) is not None:
        return False
    return component._qk_norm_phase is None


def settings_allow(component: Any) -> bool:
    """The bridge settings a user can switch after loading (per-head results, split inputs)."""
    config = component.config
    return not any(bool(getattr(config, name, False)) for name in _UNSUPPORTED_SETTINGS)


def _grouped_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
    hf_attn = self.original_component
    position_embeddings = kwargs.get("position_embeddings")
    dropout = self.training and getattr(hf_attn, "attention_dropout", 0.0) > 0.0
    if "hidden_states" in kwargs:
        hidden_states = kwargs["hidden_states"]
    elif args and isinstance(args[0], Tensor):
        hidden_states = args[0]
    else:
        hidden_states = None
    head_dim = hf_attn.head_dim
    if (
        dropout
        or hidden_states is None
        or not settings_allow(self)
        or not (isinstance(position_embeddings, tuple) and position_embeddings[0].shape[-1] == head_dim)
    ):
        return type(self).forward(self, *args, **kwargs)

    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    kwargs = dict(kwargs)
    kwargs.pop("hidden_states", None)
    kwargs.pop("position_embeddings")
    attention_mask = kwargs.pop("attention_mask", None)

    hidden_states = self.hook_in(hidden_states)
    input_shape = hidden_states.shape[:-1]
    split_heads = (*input_shape, -1, head_dim)
    query = self.q(hidden_states).view(split_heads).transpose(1, 2)
    key = self.k(hidden_states).view(split_heads).transpose(1, 2)
    value = self.v(hidden_states).view(split_heads).transpose(1, 2)

    cos, sin = self._apply_position_embedding_hooks(position_embeddings)
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    if hasattr(self, "hook_rot_q"):
        query = self.hook_rot_q(query)
    if hasattr(self, "hook_rot_k"):
        key = self.hook_rot_k(key)
    key, value = self._update_kv_cache(key, value, **kwargs)

    scaling = getattr(hf_attn, "scaling", head_dim**-0.5)
    mixed, pattern = attend(self, query, key, value, attention_mask, scaling, hooked=True)
    return self.hook_out(self.o(_to_projection_dtype(self, mixed.reshape(*input_shape, -1)))), pattern


def attend(
    self: Any,
    query: Float[Tensor, "batch head query d_head"],
    key: Float[Tensor, "batch kv_head key d_head"],
    value: Float[Tensor, "batch kv_head key d_head"],
    attention_mask: Tensor | None,
    scaling: float,
    *,
    hooked: bool,
) -> tuple[Float[Tensor, "batch query head d_head"], Tensor | None]:
    """The heads' mixed values (and the pattern, where computed) of attention component ``self``,
    from queries and keys already rotated and the cache already updated: the fused kernel where
    ``_fused_kernel_mask`` allows it, else the grouped products with the bridge's own mask and
    softmax. ``hooked``: fire ``hook_attn_scores`` and ``hook_pattern`` (the bridge's path); the
    direct layers (:mod:`mechref.model.bridge.direct`) call it without, when nothing listens, so
    that both compute the same numbers with the same operations."""
    mask = _fused_kernel_mask(self, query, key, attention_mask, hooked)
    if mask is not False:
        mixed = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True, is_causal=mask is None and query.shape[-2] > 1
        )
        return mixed.transpose(1, 2), None
    scores = grouped_scores(query, key, scaling)
    scores = self._apply_reconstruct_attention_mask(
        attn_scores=scores, attention_mask=attention_mask, seq_len=key.shape[-2], q_seq_len=query.shape[-2]
    )
    if hooked:
        scores = self.hook_attn_scores(scores)
    pattern = self._masked_softmax(scores, dtype=torch.float32).to(query.dtype)
    pattern = self._scrub_compatibility_pattern_nans(pattern)
    if hooked:
        pattern = self.hook_pattern(pattern)
    return grouped_mix(pattern, value).transpose(1, 2), pattern


def _to_projection_dtype(self: Any, mixed: Tensor) -> Tensor:
    """The heads' output in the output projection's dtype (a rotary module may hand back float32
    cos/sin, which promotes the queries and keys)."""
    o_weight = getattr(getattr(self.o, "original_component", None), "weight", None)
    if isinstance(o_weight, Tensor) and o_weight.dtype.is_floating_point and mixed.dtype != o_weight.dtype:
        return mixed.to(o_weight.dtype)
    return mixed


def _fused_kernel_mask(
    self: Any, query: Tensor, key: Tensor, attention_mask: Tensor | None, hooked: bool = True
) -> Tensor | Literal[False] | None:
    """The mask to hand the fused kernel (``None``: causal or none needed), or ``False`` where the
    grouped products must run: a CPU, a hook on the scores or the pattern, a hook on the block
    itself (it may read the pattern it returns), compatibility masking, or a mask the kernel
    cannot take as it is."""
    if query.device.type not in FUSED_KERNEL_DEVICES or self.compatibility_mode:
        return False
    # Unhooked: the direct layers call with no hook anywhere in the block (checked there, once).
    if hooked and (self._forward_hooks or self.hook_attn_scores.has_hooks() or self.hook_pattern.has_hooks()):
        return False
    queries, keys = query.shape[-2], key.shape[-2]
    if attention_mask is None:
        # Without a mask only a square block (no cache) or a single query is unambiguous.
        return None if queries == keys or queries == 1 else False
    if attention_mask.ndim != 4:
        return False
    mask = attention_mask[..., :keys]
    if mask.shape[-2] != queries:
        mask = mask[..., -queries:, :]
    if mask.dtype == torch.bool or mask.dtype == query.dtype:
        return mask
    # A float32 mask's minimum rounds to -inf in bfloat16, and a row of -inf (a padding query)
    # makes the kernel return NaN, which the next layer spreads through 0 * NaN: keep it finite.
    return mask.clamp_min(torch.finfo(query.dtype).min).to(query.dtype)


def install_grouped_attention(bridge: Any) -> int:
    """Give every attention component of ``bridge`` that :func:`covers` the grouped forward;
    returns how many. The others keep the bridge's own forward."""
    installed = 0
    for module in bridge.modules():
        if covers(module):
            # Past the bridge's __setattr__, which hands unknown names to the wrapped HF module.
            object.__setattr__(module, "forward", MethodType(_grouped_forward, module))
            installed += 1
    return installed


def uses_grouped_attention(component: Any) -> bool:
    """Whether ``component`` runs the grouped forward."""
    forward = component.__dict__.get("forward")
    return isinstance(forward, MethodType) and forward.__func__ is _grouped_forward


@contextlib.contextmanager
def bridge_attention(model: Any) -> Iterator[None]:
    """Run the bridge's own attention forward (keys and values repeated per query head) inside the
    block: the reference the grouped forward is tested and benchmarked against.

    >>> from mechref.testing import tiny_model
    >>> model = tiny_model("qwen2", n_layers=2)
    >>> with bridge_attention(model):
    ...     [uses_grouped_attention(block.attn) for block in model.bridge.blocks]
    [False, False]
    >>> [uses_grouped_attention(block.attn) for block in model.bridge.blocks]
    [True, True]
    """
    removed = {}
    for module in model.bridge.modules():
        if uses_grouped_attention(module):
            removed[module] = module.__dict__.pop("forward")
    try:
        yield
    finally:
        for module, forward in removed.items():
            object.__setattr__(module, "forward", forward)
