"""Weight orthogonalization: a permanent edit that stops a model from writing a direction.

Every matrix that writes to the residual stream (token embedding, attention output projections,
MLP output projections, and their biases) is projected so that its output has no component along
``r``: ``W <- W - r r^T W`` (Arditi et al. 2024, section 4.1). The edited model behaves as the
hook-based :func:`~mechref.interventions.directional_ablation`, without any hooks, and can be
saved as an ordinary Hugging Face folder.

Families that normalize each write before adding it (Gemma-2, Gemma-3, OLMo-2: the stream gets
``g * y / rms(y)``) are edited through that norm: each writer is projected against the unit vector
along ``g * r`` (:func:`~mechref.model.norms.write_target`), which removes ``r`` from every write
exactly; the rest of each write is then normalized by a slightly different ``rms``, so the edited
model is close to the hook ablation but not equal to it. :data:`POST_NORM_FAMILIES` names them, and
the export measures that deviation (:mod:`mechref.analyses.export`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, cast

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import AutoModelForCausalLM, PreTrainedModel

from mechref.edits.strengths import EditStrengths
from mechref.errors import MechrefError
from mechref.framework.io import atomic_path
from mechref.framework.ownership import check_export_target
from mechref.framework.vectors import unit
from mechref.model.loading import MechrefModel
from mechref.model.tensors import SAFETENSORS_DTYPES, FolderTensors
from mechref.version import __version__

# Families whose every residual-stream writer is a plain linear map (token embedding, attention
# and MLP output projections; in the mixture-of-experts families every expert's output projection
# and the shared expert's, whose outputs the block sums with router weights) with nothing between it
# and the residual stream: for these the edit equals directional ablation
# (tests/unit/model/test_families.py checks it on each).
EXACT_FAMILIES = ("llama", "mistral", "phi3", "qwen2", "qwen3", *("qwen3_moe", "mixtral", "olmoe", "qwen2_moe"))
#: Families (config ``model_type``) whose attention and MLP outputs pass through an RMS norm before the
#: stream (``post_attention_layernorm``, ``post_feedforward_layernorm``): edited through that norm, the
#: direction removed exactly and the rest of each write rescaled a little (not equal to the hook ablation).
POST_NORM_FAMILIES = ("gemma2", "gemma3", "gemma3_text", "olmo2")
#: Every family the weight edit supports.
ORTHOGONALIZABLE = EXACT_FAMILIES + POST_NORM_FAMILIES
# The Hugging Face name of the norm after each kind of writer, beside it in its decoder layer.
_POST_NORM_NAMES = {"self_attn": "post_attention_layernorm", "mlp": "post_feedforward_layernorm"}
_WHY_NOT = {
    "gpt2": "its output layers are transposed Conv1D weights and its learned position embeddings also write the stream",
}


def check_orthogonalizable(config) -> None:
    """Raise :class:`MechrefError` (before any computation) for a model family whose weights this
    edit would change without removing the direction.

    >>> from transformers import GPT2Config
    >>> check_orthogonalizable(GPT2Config())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mechref.errors.MechrefError: weight orthogonalization does not support gpt2 models: its output layers ...
    """
    model_type = str(getattr(config, "model_type", None))
    if model_type in ORTHOGONALIZABLE:
        return
    why = _WHY_NOT.get(model_type, f"it is verified only for {', '.join(ORTHOGONALIZABLE)} models")
    raise MechrefError(
        f"weight orthogonalization does not support {model_type} models: {why}. Directional ablation with hooks "
        "(mechref.interventions.directional_ablation) works for every model mechref loads."
    )


def through_post_norms(config) -> bool:
    """Whether the edit of this family goes through post-norms (close to the hook ablation, not equal).

    >>> from transformers import Gemma3TextConfig, Qwen2Config
    >>> through_post_norms(Gemma3TextConfig()), through_post_norms(Qwen2Config())
    (True, False)
    """
    return str(getattr(config, "model_type", None)) in POST_NORM_FAMILIES


def post_norm_names(plain: PreTrainedModel, writer_names: Sequence[str]) -> list[str | None]:
    """The name of the norm after each writer in a plain ``transformers`` model (its decoder layer's
    ``post_attention_layernorm`` or ``post_feedforward_layernorm``), or None for every writer of a
    family without post-norms."""
    if not through_post_norms(plain.config):
        return [None] * len(writer_names)
    modules = dict(plain.named_modules())
    found: list[str | None] = []
    for name in writer_names:
        layer, part, _ = name.rsplit(".", 2)
        norm = f"{layer}.{_POST_NORM_NAMES.get(part, '?')}"
        if norm not in modules:
            raise MechrefError(f"cannot find the norm after {name} in {type(plain).__name__} ({norm} is not a module)")
        found.append(norm)
    return found


def post_norm_gains(
    plain: PreTrainedModel, writer_names: Sequence[str], weights: Callable[[str], Tensor] | None = None
) -> list[Tensor | None]:
    """The gain ``g`` of the norm after each writer (float64), None where there is none. ``weights``
    (a norm's weight name to its tensor) reads the weights from elsewhere than the model, e.g. a
    folder's float32 weights beside a model loaded in bfloat16; the module's convention (Gemma's
    ``1 + weight``) applies to them."""
    from mechref.model.norms import FrozenNorm

    modules = dict(plain.named_modules())
    gains: list[Tensor | None] = []
    for norm in post_norm_names(plain, writer_names):
        if norm is None:
            gains.append(None)
            continue
        frozen = FrozenNorm.of(modules[norm], None if weights is None else weights(f"{norm}.weight"))
        if frozen is None:
            raise MechrefError(f"{norm} is not an RMS norm mechref can read (no weight or epsilon)")
        gains.append(frozen.gain)
    return gains


def writer_module_names(model: MechrefModel, plain: PreTrainedModel | None = None) -> list[str]:
    """Names of the linear layers that write to the residual stream (attention and MLP outputs).

    With ``plain`` (a plain ``transformers`` model of the same weights), the names are found in
    it by matching each writer's weights, which holds even where the bridge moves or renames
    modules (e.g. Phi-3's ``o_proj``); without it, they are read from the bridged model. A
    mixture-of-experts block is named as a whole (its tensors: :func:`writer_tensors`).
    """
    writers = []
    for block in model.bridge.blocks:
        for part, attr in (("attn", "o"), ("mlp", "out")):
            wrapper = getattr(getattr(block, part), attr, None)
            if wrapper is None and part == "mlp":
                # A mixture-of-experts block: the writer is the block itself (its experts' and shared
                # expert's output projections, writer_tensors), found under its name.
                wrapper = block.mlp
                part = "moe"
            writers.append((part, cast(torch.nn.Module, getattr(wrapper, "original_component", wrapper))))
    if plain is not None and all(part != "moe" for part, _ in writers):
        return [_matching_module(plain, module, part) for part, module in writers]
    names = {id(module): name for name, module in model.hf_model.named_modules()}
    found = []
    for part, module in writers:
        if id(module) not in names:
            raise MechrefError(
                f"cannot locate the {part} output projection of {type(model.hf_model).__name__} for orthogonalization"
            )
        # The bridge wraps each HF module as ``<name>._original_component``; the plain model's
        # name is the path without those wrapper segments.
        found.append(names[id(module)].replace("._original_component", ""))
    return found


def _matching_module(plain: PreTrainedModel, module: torch.nn.Module, part: str) -> str:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise MechrefError(f"the {part} output of this model has no weight matrix to orthogonalize")
    target = weight.detach().cpu()
    head = target.flatten()[:32]  # a cheap first test before comparing whole matrices
    matches = []
    for name, candidate in plain.named_modules():
        other = getattr(candidate, "weight", None)
        if not isinstance(other, Tensor) or other.shape != target.shape:
            continue
        if not torch.equal(other.detach().flatten()[:32].to(target.dtype).cpu(), head):
            continue
        if torch.equal(other.detach().to(target.dtype).cpu(), target):
            matches.append(name)
    if len(matches) != 1:
        raise MechrefError(
            f"cannot locate the {part} output projection in {type(plain).__name__} for orthogonalization "
            f"({len(matches)} layers hold its weights)"
        )
    return matches[0]


# Rows of an embedding edited at a time: the edit runs in float64, and a whole vocabulary's embedding
# in float64 (1.9 GB for a 151,936 x 1,536 one) and its temporaries would dwarf the model.
_ROWS = 2048


def _remove_rows(
    weight: Tensor, r: Tensor, strength: float, norm_preserving: bool, out_dtype: torch.dtype, *, in_place: bool = False
) -> Tensor:
    """:func:`_remove` of each row of ``weight`` (``dim=-1``), ``_ROWS`` rows at a time (each row's edit
    reads that row alone, so the result is the same as in one piece), cast to ``out_dtype``;
    ``in_place`` writes the result over ``weight`` (when it has that dtype) instead of a new tensor."""
    out = weight if in_place and weight.dtype == out_dtype else torch.empty(weight.shape, dtype=out_dtype)
    for start in range(0, weight.shape[0], _ROWS):
        rows = weight[start : start + _ROWS].double()
        out[start : start + _ROWS] = _remove(rows, r, strength, norm_preserving, dim=-1).to(out_dtype)
    return out


def _remove(vectors: Tensor, r: Tensor, strength: float, norm_preserving: bool, dim: int) -> Tensor:
    """Remove ``strength`` of each write vector's component along ``r`` (float64). Write vectors
    lie along ``dim`` (``0``: the columns of a ``[d_model, d_in]`` output matrix; ``-1``: the rows
    of an embedding or a bias; ``-2``: the columns of each expert's ``[d_model, d_in]`` matrix in a
    ``[n_experts, d_model, d_in]`` tensor). ``norm_preserving`` gives every write vector back its norm,
    which keeps it orthogonal to ``r`` when the whole component was removed."""
    moved = vectors.movedim(dim, -1)  # every write vector a row
    along = moved @ r
    edited = moved - strength * along.unsqueeze(-1) * r
    if norm_preserving:
        before, after = moved.norm(dim=-1, keepdim=True), edited.norm(dim=-1, keepdim=True)
        # A write vector that lay along r has nothing left to rescale: it stays zero.
        edited = edited * torch.where(after > 0, before / after.clamp_min(1e-300), torch.ones_like(after))
    return edited.movedim(-1, dim)


def writer_tensors(plain: PreTrainedModel, writer_names: Sequence[str]) -> dict[str, tuple[str, int]]:
    """Every tensor the edit changes besides the embedding: ``{tensor name: (writer name, dim its write
    vectors lie along)}``. A linear writer's weight (``dim=0``) and bias (``-1``); a mixture-of-experts
    block's expert output projections (``experts.down_proj``, ``[n_experts, d_model, d_in]``: ``-2``;
    their biases ``-1``) and its shared expert's output projection, where it has one."""
    modules = dict(plain.named_modules())
    found: dict[str, tuple[str, int]] = {}
    for writer in writer_names:
        module = modules[writer]
        if isinstance(getattr(module, "weight", None), Tensor):
            found[f"{writer}.weight"] = (writer, 0)
            if getattr(module, "bias", None) is not None:
                found[f"{writer}.bias"] = (writer, -1)
            continue
        experts = getattr(module, "experts", None)
        down = getattr(experts, "down_proj", None)
        if not isinstance(down, Tensor) or down.ndim != 3:
            raise MechrefError(f"{writer} ({type(module).__name__}) has no output projection mechref knows how to edit")
        found[f"{writer}.experts.down_proj"] = (writer, -2)
        if isinstance(getattr(experts, "down_proj_bias", None), Tensor):
            found[f"{writer}.experts.down_proj_bias"] = (writer, -1)
        shared = getattr(module, "shared_expert", None) or getattr(module, "shared_experts", None)
        if shared is not None:
            name = next(n for n, m in modules.items() if m is shared)
            found[f"{name}.down_proj.weight"] = (writer, 0)
            if getattr(shared.down_proj, "bias", None) is not None:
                found[f"{name}.down_proj.bias"] = (writer, -1)
    return found


@torch.no_grad()
def orthogonalize_weights(
    hf_model: PreTrainedModel,
    direction: Float[Tensor, " d_model"],
    writer_names: list[str],
    *,
    strengths: EditStrengths | None = None,
    norm_preserving: bool = False,
) -> PreTrainedModel:
    """Edit ``hf_model`` in place so that nothing it writes to the residual stream has a component along ``direction``.

    ``strengths`` removes only a share of the component per writer (:class:`~mechref.edits.strengths.EditStrengths`;
    default: all of it, the paper's edit). ``norm_preserving`` then rescales every write vector (a
    column of an output projection, a row of the embedding) to its original norm, so the edit
    changes directions only, not magnitudes. A writer followed by a post-norm of gain ``g`` is
    projected against ``g * direction`` normalized (:func:`~mechref.model.norms.write_target`).
    """
    from mechref.model.norms import write_target

    check_orthogonalizable(hf_model.config)
    embedding = cast(torch.nn.Embedding, hf_model.get_input_embeddings())
    d_model = int(embedding.weight.shape[1])
    r = unit(direction, d_model).double()
    per_writer = strengths.per_writer() if strengths is not None else [1.0] * len(writer_names)
    if len(per_writer) != len(writer_names):
        raise ValueError(f"{len(per_writer)} edit strengths for {len(writer_names)} residual-stream writers")
    output = hf_model.get_output_embeddings()
    if output is not None and output.weight is embedding.weight:
        # Tied embeddings: the unembedding must keep reading the original vectors.
        output.weight = torch.nn.Parameter(embedding.weight.detach().clone(), requires_grad=False)
        hf_model.config.tie_word_embeddings = False
        if hasattr(hf_model, "_tied_weights_keys"):
            hf_model._tied_weights_keys = {} if isinstance(hf_model._tied_weights_keys, dict) else []
    weight = embedding.weight
    strength = strengths.embedding if strengths is not None else 1.0
    _remove_rows(weight, r, strength, norm_preserving, weight.dtype, in_place=True)
    gains = post_norm_gains(hf_model, writer_names)
    strength_of = dict(zip(writer_names, per_writer))
    target_of = {name: write_target(r, gain) for name, gain in zip(writer_names, gains)}
    parameters = dict(hf_model.named_parameters())
    for tensor, (writer, dim) in writer_tensors(hf_model, writer_names).items():
        param = parameters[tensor]  # e.g. [d_model, d_in]: column j is what input j writes
        edited = _remove(param.double(), target_of[writer], strength_of[writer], norm_preserving, dim)
        param.copy_(edited.to(param.dtype))
    return hf_model


def edited_copy(
    model: MechrefModel,
    direction: Float[Tensor, " d_model"],
    what: str,
    strengths: EditStrengths | None = None,
    norm_preserving: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, list[str]]:
    """A plain ``transformers`` copy of ``model``, loaded from its folder in ``dtype``, with the edit
    applied to its weights; and the names of the writers edited. ``what`` names the caller in the
    errors (an unsupported family, quantized or offloaded weights, a model with no folder)."""
    check_orthogonalizable(model.hf_model.config)
    model.require_plain_weights(what)
    if not model.folder:
        raise MechrefError(
            "this model was not loaded from a folder, so there are no weights to export; load it with load_model(path)"
        )
    plain = AutoModelForCausalLM.from_pretrained(model.folder, dtype=dtype)
    names = writer_module_names(model, plain)
    orthogonalize_weights(plain, direction, names, strengths=strengths, norm_preserving=norm_preserving)
    return plain, names


def _plan(model: MechrefModel) -> tuple[FolderTensors, list[str], str, str | None] | None:
    """What a tensor-by-tensor edit of ``model``'s folder needs: the folder's tensors, the writers'
    module names, the embedding's tensor name, and the unembedding's when the folder does not store
    it (tied to the embedding: the edit unties it) else None. None when the folder's tensors do not carry the plain
    model's names (a checkpoint ``transformers`` renames while loading): then the edit loads a copy."""
    from mechref.model.plain import plain_view

    assert model.folder is not None
    tensors = FolderTensors(model.folder)
    plain = plain_view(model)
    expected = set(plain.state_dict())
    if not tensors.where or not set(tensors.where) <= expected:
        return None
    modules = {module: name for name, module in plain.named_modules()}
    embedding = modules[plain.get_input_embeddings()] + ".weight"
    output = plain.get_output_embeddings()
    unembedding = modules[output] + ".weight" if output is not None else None
    names = writer_module_names(model, plain)
    if embedding not in tensors.where or any(t not in tensors.where for t in writer_tensors(plain, names)):
        return None
    return tensors, names, embedding, unembedding if unembedding not in tensors.where else None


def _itself(tensor: Tensor) -> Tensor:
    return tensor


@dataclass(frozen=True)
class LazyTensor:
    """A tensor of an export, described before it is made: ``make()`` reads (and edits) it."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[], Tensor]


def edited_tensor_plan(
    model: MechrefModel,
    direction: Float[Tensor, " d_model"],
    strengths: EditStrengths | None = None,
    norm_preserving: bool = False,
    dtype: torch.dtype = torch.float32,
    *,
    only_edited: bool = False,
) -> list[LazyTensor]:
    """The orthogonalized model's tensors as :class:`LazyTensor`, each read from ``model``'s folder in
    ``dtype`` and edited as :func:`orthogonalize_weights` edits a copy loaded in ``dtype`` (the same
    bytes, without the copy) when it is made: the state dict ``edited_copy(...).save_pretrained``
    writes, an untied unembedding included when the embedding was tied. ``only_edited``: the edited
    tensors only."""
    plan = _plan(model)
    if plan is None:
        plain, _ = edited_copy(model, direction, "exporting an edited model", strengths, norm_preserving, dtype)
        return [LazyTensor(n, tuple(t.shape), t.dtype, functools.partial(_itself, t)) for n, t in plain.state_dict().items()]
    tensors, names, embedding, untied = plan
    per_writer = strengths.per_writer() if strengths is not None else [1.0] * len(names)
    if len(per_writer) != len(names):
        raise ValueError(f"{len(per_writer)} edit strengths for {len(names)} residual-stream writers")
    from mechref.model.norms import write_target
    from mechref.model.plain import plain_view

    strength_of = dict(zip(names, per_writer))
    r = unit(direction, model.d_model).double()
    plain = plain_view(model)
    edited_at = writer_tensors(plain, names)
    # Each writer's target read from the folder's own norm weights, in ``dtype`` as a copy loaded in it reads them.
    gains = post_norm_gains(plain, names, lambda norm: tensors.get(norm, dtype))
    target_of = {name: write_target(r, gain) for name, gain in zip(names, gains)}
    out: list[LazyTensor] = []

    def lazy(name: str, as_name: str | None = None, make: Callable[[], Tensor] | None = None) -> LazyTensor:
        shape, kind = tensors.shape_and_dtype(name, dtype)
        return LazyTensor(as_name or name, shape, kind, make or (lambda: tensors.get(name, dtype)))

    def edited_embedding() -> Tensor:
        strength = strengths.embedding if strengths is not None else 1.0
        return _remove_rows(tensors.get(embedding, dtype), r, strength, norm_preserving, dtype, in_place=True)

    def edited_writer(name: str, writer: str, dim: int) -> Tensor:
        # Through ``dtype`` as a copy loaded in it would round.
        weight = tensors.get(name, torch.float64)
        return _remove(weight, target_of[writer], strength_of[writer], norm_preserving, dim).to(dtype)

    for name in tensors.where:
        if name == embedding:
            if untied is not None:
                out.append(lazy(name, untied))  # tied: the unembedding keeps reading the original vectors
            out.append(lazy(name, make=edited_embedding))
        elif name in edited_at:
            writer, dim = edited_at[name]
            out.append(lazy(name, make=functools.partial(edited_writer, name, writer, dim)))
        elif not only_edited:
            out.append(lazy(name))
    return out


def edited_tensors(
    model: MechrefModel,
    direction: Float[Tensor, " d_model"],
    strengths: EditStrengths | None = None,
    norm_preserving: bool = False,
    dtype: torch.dtype = torch.float32,
    *,
    only_edited: bool = False,
) -> Iterator[tuple[str, Tensor]]:
    """``(name, tensor)`` of :func:`edited_tensor_plan`, made one at a time."""
    for lazy in edited_tensor_plan(model, direction, strengths, norm_preserving, dtype, only_edited=only_edited):
        yield lazy.name, lazy.make()


_SAFETENSORS_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def write_safetensors(path: Path, tensors: Sequence[LazyTensor]) -> None:
    """Write ``tensors`` as one safetensors file, making and writing each in turn: the header is built
    from their shapes, so the file never sits in memory whole (``safetensors.torch.save_file``
    holds every tensor, and a bytes copy of each)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        size = math.prod(t.shape) * t.dtype.itemsize
        header[t.name] = {"dtype": _SAFETENSORS_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for t in tensors:
            tensor = t.make()
            if tuple(tensor.shape) != t.shape or tensor.dtype != t.dtype:
                raise MechrefError(
                    f"{t.name} was planned as {t.dtype} {t.shape} and made as {tensor.dtype} {tuple(tensor.shape)}"
                )
            data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
            file.write(memoryview(data))  # type: ignore[arg-type]  # an ndarray is a buffer; its stub says otherwise
            del tensor, data


def put_tensors(plain: PreTrainedModel, tensors: Iterable[tuple[str, Tensor]]) -> PreTrainedModel:
    """Make each ``(name, tensor)`` a parameter of ``plain``, cast to its dtype: with the orthogonalized
    tensors of :func:`edited_tensors` (``only_edited=True``) and a plain model of the same folder, the
    edited copy cast to that dtype, without a float32 copy of the whole model."""
    dtype = next(plain.parameters()).dtype
    modules = dict(plain.named_modules())
    for name, tensor in tensors:
        module, _, key = name.rpartition(".")
        setattr(modules[module], key, torch.nn.Parameter(tensor.to(dtype), requires_grad=False))
    return plain


def export_config(model: MechrefModel, dtype: torch.dtype):
    """The config of ``model``'s orthogonalized export in ``dtype``: its folder's, untied (the edit
    unties tied embeddings: the unembedding keeps the original vectors, as :func:`orthogonalize_weights` does)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model.folder))
    config.dtype = dtype
    config.tie_word_embeddings = False
    # As save_pretrained writes it: the class that loads the weights (tools such as llama.cpp's converter read it).
    config.architectures = [type(model.hf_model).__name__]
    return config


def export_orthogonalized(
    model: MechrefModel,
    direction: Float[Tensor, " d_model"],
    out_dir: str | Path,
    *,
    provenance: dict | None = None,
    overwrite: bool = False,
    strengths: EditStrengths | None = None,
    norm_preserving: bool = False,
) -> Path:
    """Save an orthogonalized copy of ``model`` as a Hugging Face folder that loads without mechref.

    The edit is applied in float32, tensor by tensor, to the weights in the model's folder
    (:func:`edited_tensors`), and written in shards as it goes: the export holds one tensor in
    memory, not a second model. ``strengths`` and ``norm_preserving`` choose the edit variant
    (see :func:`orthogonalize_weights`). ``out_dir`` must be new or empty, or (with ``overwrite``) an
    earlier mechref export.
    """

    check_export_target(out_dir, overwrite)
    check_orthogonalizable(model.hf_model.config)
    model.require_plain_weights("exporting an edited model")
    if not model.folder:
        raise MechrefError(
            "this model was not loaded from a folder, so there are no weights to export; load it with load_model(path)"
        )
    names = writer_module_names(model)
    out_dir = Path(out_dir)
    plan = edited_tensor_plan(model, direction, strengths, norm_preserving)
    shards: list[list[LazyTensor]] = [[]]
    size = 0
    for lazy in plan:
        nbytes = math.prod(lazy.shape) * lazy.dtype.itemsize
        if shards[-1] and size + nbytes > _SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(lazy)
        size += nbytes
    with atomic_path(out_dir, replace_folder=True) as tmp:
        tmp.mkdir()
        weight_map: dict[str, str] = {}
        for i, shard in enumerate(shards, 1):
            file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(tmp / file, shard)
            weight_map.update({t.name: file for t in shard})
        total = sum(math.prod(t.shape) * t.dtype.itemsize for t in plan)
        (tmp / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n"
        )
        export_config(model, torch.float32).save_pretrained(tmp)
        _generation_config(model.folder, tmp)
        model.tokenizer.save_pretrained(tmp)
        info = {
            "mechref_version": __version__,
            "base_model": model.name,
            "base_source": model.source,
            "edited_modules": ["embedding", *names],
            "edit": edit_description(strengths, norm_preserving, through_post_norms(model.hf_model.config)),
            **(provenance or {}),
        }
        (tmp / "mechref_edit.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        (tmp / "README.md").write_text(model_card(info), encoding="utf-8")
    return out_dir


# Bytes of tensors per file of an export (each file is written a tensor at a time, whatever its size).
_SHARD_BYTES = 2 * 2**30


def _generation_config(folder: str, out: Path) -> None:
    from transformers import GenerationConfig

    with contextlib.suppress(OSError):  # the folder has no generation_config.json: nor will the export
        GenerationConfig.from_pretrained(folder).save_pretrained(out)


def edit_description(strengths: EditStrengths | None, norm_preserving: bool, post_norms: bool = False) -> dict:
    """What an export records of its edit variant; ``post_norms``: the family's writers were edited
    through their post-norms (:data:`POST_NORM_FAMILIES`), so the edit is close to the hook ablation, not equal.

    >>> edit_description(None, False)
    {'kind': 'orthogonalization', 'norm_preserving': False, 'strengths': 'full'}
    >>> edit_description(None, False, post_norms=True)["through_post_norms"]
    True
    """
    described: dict = {
        "kind": "orthogonalization",
        "norm_preserving": norm_preserving,
        "strengths": "full" if strengths is None or strengths.is_full() else strengths.to_dict(),
    }
    if post_norms:
        described["through_post_norms"] = True
        described["post_norm_note"] = POST_NORM_NOTE
    return described


#: What an export of a post-norm family says of its edit (manifest and model card).
POST_NORM_NOTE = (
    "this family normalizes each attention and MLP output before adding it to the residual stream "
    "(g * y / rms(y)); each output projection was projected against g * r normalized, which removes the "
    "direction r from every write exactly, while the rest of each write is divided by a slightly different "
    "rms: the edited model is close to the directional ablation with hooks, not equal to it "
    "(its measured deviation: deviation_from_hook_ablation, written by python -m mechref.analyses.export)"
)


def model_card(info: dict) -> str:
    """The README.md of an orthogonalized export, from its ``mechref_edit.json``."""
    lines = [
        f"# {info['base_model']}, refusal direction removed",
        "",
        "This model is a copy of the base model whose weights were orthogonalized against one direction "
        "of its residual stream with mechref (Arditi et al. 2024, 'Refusal in Language Models Is Mediated "
        "by a Single Direction'): the token embedding and every attention and MLP output projection were "
        "projected so that the model can no longer write that direction. It was made for research on "
        "refusal; it will comply with requests its base model refuses, including harmful ones.",
        "",
        f"- base model: `{info['base_model']}` ({info['base_source']})",
    ]
    for key in ("layer", "position", "bypass_score", "induce_score", "kl", "harmful_train", "harmless_train", "n_train"):
        if key in info:
            lines.append(f"- {key.replace('_', ' ')}: `{info[key]}`")
    if info.get("edit", {}).get("through_post_norms"):
        lines.append(f"- through post-norms: {info['edit']['post_norm_note']}")
    deviation = info.get("deviation_from_hook_ablation")
    if deviation:
        kl, same = deviation["kl_first_token"], deviation["identical_replies"]
        lines.append(
            f"- measured deviation from the directional ablation with hooks: mean first-token KL {kl['mean']:.4f} "
            f"(95% interval {kl['ci95']}, max {deviation['kl_first_token_max']:.4f}, {kl['n']} harmless prompts); "
            f"identical greedy replies {same['k']}/{same['n']} harmful prompts"
            + ("" if deviation.get("close", True) else "; **this edit is not the hook ablation on this model**")
        )
    lines += [
        f"- made with mechref {info['mechref_version']}",
        "",
        "Load it with `transformers.AutoModelForCausalLM.from_pretrained(<this folder>)`.",
        "",
    ]
    return "\n".join(lines)
