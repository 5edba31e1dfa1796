"""Plain ``transformers`` models beside a loaded one, without a second copy of its weights.

A check that compares an edit or an export with the model it came from used to load the model a
second time; on the embedded model that is 3.3 GiB more per copy. Two tools keep one copy:

* :func:`plain_view` builds a plain ``transformers`` model whose every tensor *is* the loaded
  model's (shared storage, no memory): replace a few of its parameters (an edit's writers) and the
  rest stays shared.
* :func:`weights_released` frees the loaded model's weights for the length of a ``with`` block
  (for a model read from disk, such as an export, to take their place) and loads them back from the
  model's folder after it, checking that they are the same bytes.

>>> import torch
>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> plain = plain_view(model)
>>> ids = torch.tensor([[1, 2, 3]])
>>> torch.equal(plain(ids).logits, model.hf_model(ids).logits)
True
>>> plain.model.embed_tokens.weight.data_ptr() == model.hf_model.get_input_embeddings().weight.data_ptr()
True
"""

from __future__ import annotations

import contextlib
import copy
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

import torch
from torch import Tensor

from mechref.errors import MechrefError
from mechref.framework.memory import give_back_freed

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from mechref.model.loading import MechrefModel

# The bridge wraps each Hugging Face module as ``<name>._original_component``; the plain model's
# name of a tensor is its path without those wrapper segments.
_WRAPPER = "._original_component"


def plain_names(hf_model: torch.nn.Module) -> dict[str, Tensor]:
    """Every parameter and buffer of a bridged Hugging Face model, by its name in a plain model."""
    tensors: dict[str, Tensor] = {}
    for name, tensor in [*hf_model.named_parameters(remove_duplicate=False), *hf_model.named_buffers(remove_duplicate=False)]:
        tensors.setdefault(name.replace(_WRAPPER, ""), tensor)
    return tensors


def _slots(plain: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, str, str, bool]]:
    """``(module, key, full name, is_parameter)`` for every parameter and buffer slot of ``plain``."""
    for module_name, module in plain.named_modules():
        for is_parameter, slots in ((True, module._parameters), (False, module._buffers)):
            for key, value in slots.items():
                if value is not None:
                    yield module, key, f"{module_name}.{key}" if module_name else key, is_parameter


def plain_view(model: MechrefModel, attn_implementation: str | None = None) -> PreTrainedModel:
    """A plain ``transformers`` model of ``model``'s class and config whose parameters and buffers are
    ``model``'s own tensors: it costs no memory and shares every tensor until one of its parameters
    is replaced (never edit one in place: that edits ``model``).

    ``attn_implementation``: None, what ``from_pretrained`` loads by default (``"sdpa"`` where the
    family supports it, else ``"eager"``: what a user of an export runs; on the families whose
    attention mechref computes with grouped heads, Qwen2, Llama, Mistral and their mixtures of
    experts, also what ``model`` computes without hooks, bit for bit), or ``"eager"``."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.hf_model.config)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype, attn_implementation=attn_implementation)
    tensors = plain_names(model.hf_model)
    for module, key, name, is_parameter in list(_slots(plain)):
        tensor = tensors.get(name)
        expected = (module._parameters if is_parameter else module._buffers)[key]
        if tensor is None or expected is None or tensor.shape != expected.shape:
            raise MechrefError(f"cannot match {name} of a plain {type(plain).__name__} to the loaded model's tensors")
        if is_parameter:
            module._parameters[key] = torch.nn.Parameter(tensor.detach(), requires_grad=False)
        else:
            module._buffers[key] = tensor
    return plain.eval()


def _contiguous_input(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


@contextlib.contextmanager
def contiguous_unembedding(hf_model: torch.nn.Module) -> Iterator[None]:
    """Inside the block, the output embedding of a plain ``transformers`` model reads a contiguous copy
    of its input.

    ``generate`` computes the first token's logits from the last position only, a strided slice of
    the hidden states; torch's CPU ``linear`` then multiplies batch by batch with the whole
    ``[d_vocab, d_model]`` matrix copied once per row (1.7 GiB for 4 rows of the embedded model in
    bfloat16, for a moment). The contiguous slice goes through one matrix product instead, with
    the same logits for a single position (``tests/unit/model/test_plain.py`` checks they are
    equal). mechref's own models do this with a permanent hook on the bridge's unembedding.

    >>> from mechref.testing import tiny_model
    >>> plain = plain_view(tiny_model("qwen2"), attn_implementation="eager")
    >>> with contiguous_unembedding(plain):
    ...     len(plain.get_output_embeddings()._forward_pre_hooks)
    1
    >>> len(plain.get_output_embeddings()._forward_pre_hooks)
    0
    """
    head = hf_model.get_output_embeddings()  # type: ignore[operator]
    handle = head.register_forward_pre_hook(_contiguous_input) if isinstance(head, torch.nn.Module) else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def _fingerprint(tensor: Tensor) -> int:
    data = tensor.detach().contiguous().cpu()
    # The bytes in place (no copy): a buffer over the tensor's memory.
    return zlib.crc32(memoryview(data.view(torch.uint8).numpy()) if data.numel() else b"")  # type: ignore[arg-type]


@contextlib.contextmanager
def weights_released(model: MechrefModel) -> Iterator[None]:
    """Free ``model``'s weights inside the block; load them back from its folder after it.

    For a comparison that needs another full model in memory (an export loaded back by its own
    library): the two never sit in memory together. Loading back is memory-mapped as
    :func:`~mechref.model.loading.load_model` loads, and each tensor's bytes are checked against
    what was released (a model whose weights were changed in memory since it was loaded cannot be
    restored from its folder: that is an error after the block, and the model then holds its folder's
    weights). ``model`` must not
    be used inside the block. A model without a folder, quantized, or spread by a device map keeps
    its weights (the block runs beside them).
    """
    from mechref.model.loading import device_map_of

    if not model.folder or model.quantized or device_map_of(model.hf_model) or model.device.type != "cpu":
        try:
            yield
        finally:
            give_back_freed()  # what the block loaded, collected before the next block loads another
        return
    from transformers import AutoModelForCausalLM

    # Each parameter once (tied ones are one object), with every name it has in a plain model.
    parameters: dict[int, torch.nn.Parameter] = {}
    names: dict[int, list[str]] = {}
    for name, p in model.hf_model.named_parameters(remove_duplicate=False):
        parameters.setdefault(id(p), p)
        names.setdefault(id(p), []).append(name.replace(_WRAPPER, ""))
    prints = {key: _fingerprint(p) for key, p in parameters.items()}
    shapes = {key: p.shape for key, p in parameters.items()}
    for p in parameters.values():
        p.data = torch.empty(0, dtype=p.dtype, device=p.device)  # its shape comes back with the weights
    give_back_freed()
    try:
        yield
    finally:
        # What the block loaded goes first: a transformers model's reference cycles keep it alive until
        # the garbage is collected, and glibc keeps a converted model's freed pages until trimmed
        # (either way a whole model beside the reloaded weights).
        give_back_freed()
        reloaded = AutoModelForCausalLM.from_pretrained(model.folder, dtype=model.dtype)
        fresh = plain_names(reloaded)
        differ = []
        for key, p in parameters.items():
            tensor = next((fresh[n] for n in names[key] if n in fresh and fresh[n].shape == shapes[key]), None)
            if tensor is None:
                raise MechrefError(f"{names[key][0]} is not in the folder {model.folder}; cannot load it back")
            p.data = tensor.data
            if _fingerprint(tensor) != prints[key]:
                differ.append(names[key][0])
        del reloaded, fresh
        give_back_freed()  # what the block loaded and deleted: glibc would keep gigabytes of it
        if differ:
            # Loud: the model now holds its folder's weights, not the ones it had (edited in memory since loading).
            raise MechrefError(
                f"{len(differ)} weights of the loaded model ({differ[0]}, …) differed from its folder {model.folder} "
                "(edited in memory since loading?): the model now holds the folder's weights; load it again"
            )


def load_plain(
    folder: str | Path,
    dtype: torch.dtype,
    *,
    shared: Mapping[str, Tensor] | None = None,
    attn_implementation: str | None = None,
) -> PreTrainedModel | None:
    """The model in ``folder`` as ``AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)`` loads it
    on the CPU, its tensors read from the safetensors files one at a time; None where the folder's
    tensor names are not the model's own (a checkpoint ``transformers`` renames while loading: load
    that one with ``from_pretrained``).

    ``from_pretrained`` maps the whole file while it converts it: a float32 export loaded in
    bfloat16 held its 6 GiB of file pages at once beside the converted model (measured: 8.2 GiB
    for the embedded model). Here each tensor's pages go with it. ``shared``: tensors (by plain
    name) to use in the place of equal ones read from the folder, so that a model that differs
    from a loaded one in a few matrices costs memory for those only. The folder's generation
    settings (``generation_config.json``) are loaded as ``from_pretrained`` loads them.

    >>> import tempfile
    >>> from transformers import AutoModelForCausalLM
    >>> from mechref.testing import tiny_model_folder
    >>> folder = tiny_model_folder(tempfile.mkdtemp())
    >>> mine = load_plain(folder, torch.float32)
    >>> theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    >>> all(torch.equal(t, theirs.state_dict()[n]) for n, t in mine.state_dict().items())
    True
    """
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers.initialization import no_init_weights

    from mechref.model.tensors import FolderTensors

    folder = Path(folder)
    tensors = FolderTensors(folder)
    if not tensors.where:
        return None
    config = AutoConfig.from_pretrained(str(folder))
    # Allocated, never written (so never resident): each parameter is replaced below. The buffers
    # the folder does not store (rotary frequencies) are computed from the config, as from_pretrained does.
    with no_init_weights():
        plain = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    slots = list(_slots(plain))
    if not set(tensors.where) <= {name for _, _, name, _ in slots}:
        return None
    if getattr(plain, "_keep_in_fp32_modules", None) or getattr(plain, "_keep_in_fp32_modules_strict", None):
        return None  # from_pretrained keeps some of its modules in float32: let it load them
    shared = shared or {}
    read: dict[str, Tensor] = {}
    for module, key, name, is_parameter in slots:
        if name in read:  # a tied tensor: the same one again
            tensor = read[name]
        elif name in tensors.where:
            tensor = tensors.get(name, dtype)
            mine = shared.get(name)
            if mine is not None and mine.shape == tensor.shape and mine.dtype == tensor.dtype and torch.equal(mine, tensor):
                tensor = mine.detach()
            read[name] = tensor
        else:
            continue  # a buffer computed from the config, or a parameter tied to one set above (tied again below)
        if is_parameter:
            module._parameters[key] = torch.nn.Parameter(tensor, requires_grad=False)
        else:
            module._buffers[key] = tensor
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    stored = {t.data_ptr() for t in read.values()}
    left = [name for name, t in plain.named_parameters() if t.numel() and t.data_ptr() not in stored]
    if left:
        raise MechrefError(f"{left[0]} of {folder} was neither stored nor tied; load the folder with from_pretrained")
    if (folder / "generation_config.json").is_file():
        plain.generation_config = GenerationConfig.from_pretrained(str(folder))
    return plain.eval()


def load_sharing(folder: str | Path, like: MechrefModel) -> MechrefModel:
    """Load the model in ``folder`` as :func:`~mechref.model.loading.load_model` would (``like``'s dtype,
    device and system prompt), where every tensor equal to ``like``'s tensor of the same name *is*
    ``like``'s: a weight edit exported from ``like`` (a few matrices changed) then costs memory for
    the changed tensors only. Each tensor is read from the folder one at a time and compared, so
    the model is exactly the folder's (:func:`load_plain`); a folder whose tensors carry other names than the plain model's
    (a checkpoint ``transformers`` renames while loading) is loaded by ``load_model``.
    """
    from transformers import AutoTokenizer

    from mechref.model.loading import load_model, wrap_hf_model

    folder = Path(folder)
    options = {"dtype": like.dtype, "device": str(like.device), "system_prompt": like.chat.system_prompt}
    plain = None
    if like.device.type == "cpu" and not like.quantized:
        plain = load_plain(folder, like.dtype, shared=plain_names(like.hf_model), attn_implementation="eager")
    if plain is None:
        return load_model(folder, **options)  # type: ignore[arg-type]
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = wrap_hf_model(
        plain, tokenizer, name=str(folder), source=f"local:{folder.resolve()}", system_prompt=like.chat.system_prompt
    )
    model.folder = str(folder)
    return model
