"""An edited model folder run as the loaded model with the edited tensors swapped in.

A weight edit exported from a loaded model (``--export-model``) differs from it in a few
matrices: on the embedded model, the embedding and every layer's attention and MLP output, 1.3 GiB
of its 2.9 GiB in bfloat16. Loading the folder beside the model (even sharing every tensor the
edit left alone, :func:`~mechref.model.plain.load_sharing`) keeps both versions of those matrices
in memory for as long as the comparison runs. :class:`WeightSwap` keeps one: inside
:meth:`WeightSwap.applied` the model's own parameters hold the folder's tensors (read one at a
time) and the model's versions, memory-mapped from its file, leave resident memory
(:func:`~mechref.framework.memory.drop_file_pages`); after the block the model's own are back.

The model *is* the folder's inside the block, as far as any forward pass can tell: the same
module code and settings run, with the folder's tensors.

>>> import tempfile
>>> import torch
>>> from mechref import load_model
>>> from mechref.testing import tiny_model_folder
>>> folder = tiny_model_folder(tempfile.mkdtemp())
>>> model = load_model(folder, dtype="float32")
>>> swap = WeightSwap.plan(model, folder)  # the model's own folder: nothing differs
>>> swap.names
[]
>>> with swap.applied():
...     logits = model.forward(torch.tensor([[1, 2, 3]]))
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch

from mechref.errors import MechrefError
from mechref.framework.memory import drop_file_pages, give_back_freed
from mechref.model.plain import _WRAPPER

if TYPE_CHECKING:
    from mechref.model.loading import MechrefModel

# Config entries that say how a model was saved or is run, not what it computes (tying is a loading
# rule: the tensors themselves are compared).
_NOT_THE_MODEL = {
    "tie_word_embeddings", "dtype", "torch_dtype", "transformers_version", "_name_or_path", "_commit_hash", "use_cache",
}  # fmt: skip


@dataclass
class WeightSwap:
    """The tensors in which ``folder`` differs from ``model`` (``names``, by their plain names),
    ready to take the place of the model's own (:meth:`applied`). Made by :meth:`plan`."""

    model: MechrefModel
    folder: Path
    changes: list[SwappedTensor] = field(repr=False)
    _active: bool = field(default=False, repr=False)

    @property
    def names(self) -> list[str]:
        """The folder's tensors that take the place of the model's (their plain names)."""
        return [change.name for change in self.changes]

    @classmethod
    def plan(cls, model: MechrefModel, folder: str | Path) -> WeightSwap | None:
        """The swap that runs ``folder``'s model as ``model``, or None where it cannot be one: the folder's
        config (architecture, sizes, tied embeddings, generation settings) is not the model's, its tensors
        carry other names or shapes, it unties tensors the model ties, or the model is not a plain one on
        the CPU (quantized, spread by a device map). Every tensor is read and compared once, one at a time.
        """
        from mechref.model.loading import device_map_of
        from mechref.model.tensors import FolderTensors

        folder = Path(folder)
        if model.device.type != "cpu" or model.quantized or device_map_of(model.hf_model):
            return None
        tensors = FolderTensors(folder)
        if not tensors.where or not _same_config(model, folder):
            return None
        # Every slot of a parameter in the modules (a tied parameter fills several), with its plain names.
        slots: dict[tuple[int, str], tuple[torch.nn.Module, str, list[str]]] = {}
        for module_name, module in model.hf_model.named_modules(remove_duplicate=False):
            for key, value in module._parameters.items():
                if value is not None:
                    entry = slots.setdefault((id(module), key), (module, key, []))
                    entry[2].append(f"{module_name}.{key}".replace(_WRAPPER, "").removeprefix("."))
        buffers = {n.replace(_WRAPPER, ""): b for n, b in model.hf_model.named_buffers(remove_duplicate=False)}
        known = {n for _, _, group in slots.values() for n in group}
        if not set(tensors.where) <= known | set(buffers):
            return None
        for name in set(tensors.where) & set(buffers):
            if not _equal(tensors.get(name, buffers[name].dtype), buffers[name]):
                return None
        by_parameter: dict[int, list[tuple[torch.nn.Module, str, str | None]]] = {}
        for module, key, group in slots.values():
            stored = next((n for n in group if n in tensors.where), None)
            by_parameter.setdefault(id(module._parameters[key]), []).append((module, key, stored))
        if any(all(name is None for _, _, name in filled) for filled in by_parameter.values()):
            return None  # a parameter the folder does not store (one the bridge derives, such as a split fused matrix)
        changes: list[SwappedTensor] = []
        for filled in by_parameter.values():
            parameter = filled[0][0]._parameters[filled[0][1]]
            assert parameter is not None
            read = {name: tensors.get(name, parameter.dtype) for _, _, name in filled if name is not None}
            if any(t.shape != parameter.shape for t in read.values()):
                return None
            values = list(read.values())
            if all(_equal(t, values[0]) for t in values[1:]):
                # Tied in both (or stored once): the parameter itself takes the folder's tensor.
                if not _equal(values[0], parameter.data):
                    changes.append(SwappedTensor(next(iter(read)), parameter))
            elif any(name is None for _, _, name in filled):
                return None  # tied in the model, stored different, and a slot says nothing: ambiguous
            else:
                # The folder unties what the model ties (an edited embedding, the unembedding left alone):
                # each slot whose tensor differs gets its own parameter.
                for module, key, slot_name in filled:
                    if slot_name is not None and not _equal(read[slot_name], parameter.data):
                        changes.append(SwappedTensor(slot_name, parameter, module, key))
            del read, values
        return cls(model, folder, changes)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block ``self.model`` holds the folder's tensors; after it, its own again (the same
        tensor objects, so nothing else about it changes). Its own leave resident memory while
        replaced, where they are pages of its file that were never written."""
        from mechref.model.tensors import FolderTensors

        if self._active:
            raise MechrefError(f"the weights of {self.folder} are already in place; a swap cannot be nested")
        tensors = FolderTensors(self.folder)
        done: list[SwappedTensor] = []
        self._active = True
        give_back_freed()  # what the work before the block freed (a generation's cache): not beside the folder's tensors
        try:
            for change in self.changes:
                change.apply(tensors.get(change.name, change.parameter.dtype).to(change.parameter.device))
                done.append(change)
                if change.own is not None:  # the model's own tensor, not read inside the block: one at a time
                    drop_file_pages(change.own)
            yield
        finally:
            for change in reversed(done):
                change.undo()
            done.clear()
            self._active = False
            give_back_freed()  # the folder's tensors, freed: glibc would keep their pages


@dataclass
class SwappedTensor:
    """Folder tensor ``name`` in the place of ``parameter``'s: its data (every slot that holds it), or
    only the slot ``module._parameters[key]`` (a parameter the folder unties). ``own`` holds the
    parameter's own data while the folder's is in place."""

    name: str
    parameter: torch.nn.Parameter
    module: torch.nn.Module | None = None
    key: str = ""
    own: torch.Tensor | None = None

    def apply(self, tensor: torch.Tensor) -> None:
        """Put ``tensor`` (the folder's) in the parameter's place."""
        if self.module is None:
            self.own = self.parameter.data
            self.parameter.data = tensor
        else:
            self.module._parameters[self.key] = torch.nn.Parameter(tensor, requires_grad=self.parameter.requires_grad)

    def undo(self) -> None:
        """Put the parameter's own data (or the parameter itself) back."""
        if self.module is None:
            assert self.own is not None
            self.parameter.data = self.own
            self.own = None
        else:
            self.module._parameters[self.key] = self.parameter


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def _same_config(model: MechrefModel, folder: Path) -> bool:
    from transformers import AutoConfig, GenerationConfig

    try:
        theirs = AutoConfig.from_pretrained(str(folder)).to_dict()
    except (OSError, ValueError):
        return False
    mine = model.hf_model.config.to_dict()
    if {k: v for k, v in mine.items() if k not in _NOT_THE_MODEL and not k.startswith("_")} != {
        k: v for k, v in theirs.items() if k not in _NOT_THE_MODEL and not k.startswith("_")
    }:
        return False
    # Greedy decoding reads the generation settings: a folder loaded alone gets its own file's.
    mine_generation = getattr(model.hf_model, "generation_config", None)
    if not (folder / "generation_config.json").is_file() or mine_generation is None:
        return False
    theirs_generation = GenerationConfig.from_pretrained(str(folder)).to_diff_dict()
    ours = mine_generation.to_diff_dict()
    for settings in (ours, theirs_generation):
        settings.pop("transformers_version", None)
    return ours == theirs_generation


__all__ = ["SwappedTensor", "WeightSwap"]
