"""Each export loaded back by the library that consumes it, and measured like the in-memory edit.

The in-memory edits run through mechref's hooks; the exports do not touch them: a transformers
folder is read by ``AutoModelForCausalLM``, a LoRA adapter by ``peft.PeftModel`` on the unedited
model, a GGUF by ``transformers``' GGUF loader, and a control vector is applied as llama.cpp does
(``direction.N`` added to block ``N``'s output, with a plain PyTorch hook), since llama.cpp itself
is not run here. Every one gets the same held-out harmful prompts (greedy replies, judged) and
harmless prompts (first-token KL against the unedited model).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
from torch import Tensor

from mechref.errors import MechrefError
from mechref.generation import stop_token_ids
from mechref.model.loading import MechrefModel
from mechref.scoring import kl_divergence


@dataclass
class Measured:
    """One edited model's replies to the harmful prompts and KL on the harmless ones."""

    name: str
    loaded_by: str
    replies: list[str]
    kl: list[float] | None  # None where the runtime gives no full next-token distribution (llama-server)
    # KL(hook ablation || this model) per harmless prompt: how far a weight edit lies from the hooks it
    # stands for (zero up to rounding for the exact families; measured for the post-norm ones).
    kl_to_hooks: list[float] | None = None


def _batches(model: MechrefModel, prompts: Sequence[str], batch_size: int) -> Iterator[dict]:
    texts = model.chat.format_many(list(prompts))
    for start in range(0, len(texts), batch_size):
        batch = model.tokenizer(
            texts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
        )
        yield {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def plain_replies(
    hf_model, model: MechrefModel, prompts: Sequence[str], max_new_tokens: int, batch_size: int, desc: str = "replies"
) -> list[str]:
    """Greedy replies of a plain ``transformers`` (or PEFT) model, with the chat template and stop
    tokens of ``model``: ``generate`` itself, no mechref decoding."""
    from tqdm.auto import tqdm

    from mechref.model.plain import contiguous_unembedding

    replies: list[str] = []
    device = next(hf_model.parameters()).device
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", leave=False)
    for batch in _batches(model, prompts, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        # The same replies, without a copy of the unembedding per row (contiguous_unembedding).
        with torch.no_grad(), contiguous_unembedding(hf_model):
            out = hf_model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=stop_token_ids(model),
                pad_token_id=model.tokenizer.pad_token_id,
            )
        for row in out[:, batch["input_ids"].shape[1] :]:
            replies.append(model.decode(row.tolist(), skip_special_tokens=True).strip())
        bar.update(len(batch["input_ids"]))
    bar.close()
    return replies


def plain_first_logits(hf_model, model: MechrefModel, prompts: Sequence[str], batch_size: int) -> Tensor:
    """The next-token logits after each chat-formatted prompt, from a plain forward pass."""
    rows = []
    device = next(hf_model.parameters()).device
    for batch in _batches(model, prompts, batch_size):
        mask = batch["attention_mask"].to(device)
        with torch.no_grad():
            logits = hf_model(
                input_ids=batch["input_ids"].to(device), attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)
            ).logits
        rows.append(logits[:, -1].float().cpu())
    return torch.cat(rows)


def measure_plain(
    name: str,
    loaded_by: str,
    hf_model,
    model: MechrefModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    reference: Tensor,
    max_new_tokens: int,
    batch_size: int,
    hooks_reference: Tensor | None = None,
) -> Measured:
    """Greedy replies to ``harmful`` and next-token KL on ``harmless`` (against ``reference``) of a model loaded
    by another library; with ``hooks_reference`` (the hook ablation's logits on ``harmless``), the KL from it too."""
    replies = plain_replies(hf_model, model, harmful, max_new_tokens, batch_size, desc=name)
    logits = plain_first_logits(hf_model, model, harmless, batch_size)
    kl = [float(x) for x in kl_divergence(reference, logits)]
    to_hooks = None if hooks_reference is None else [float(x) for x in kl_divergence(hooks_reference, logits)]
    return Measured(name, loaded_by, replies, kl, to_hooks)


def measure_in_memory(
    name: str,
    model: MechrefModel,
    intervention: Callable[[], ContextManager],
    harmful: Sequence[str],
    harmless: Sequence[str],
    reference: Tensor,
    max_new_tokens: int,
    batch_size: int,
) -> Measured:
    """The in-memory edit (mechref's hooks) measured the same way as the exports."""
    with intervention():
        replies = plain_replies(model.hf_model, model, harmful, max_new_tokens, batch_size, desc=name)
        logits = plain_first_logits(model.hf_model, model, harmless, batch_size)
    return Measured(name, "mechref hooks", replies, [float(x) for x in kl_divergence(reference, logits)])


def in_memory_first_logits(
    model: MechrefModel, intervention: Callable[[], ContextManager], prompts: Sequence[str], batch_size: int
) -> Tensor:
    """:func:`plain_first_logits` of the loaded model under mechref's hooks."""
    with intervention():
        return plain_first_logits(model.hf_model, model, prompts, batch_size)


def load_folder(path: Path, dtype: torch.dtype):
    """A transformers folder as ``AutoModelForCausalLM.from_pretrained(path, dtype=dtype)`` loads it (as
    its users load it): transformers' model class and config, its tensors read one at a time
    (:func:`~mechref.model.plain.load_plain`: from_pretrained would map a float32 export whole while
    converting it); a folder that needs from_pretrained's renaming is loaded by from_pretrained."""
    from transformers import AutoModelForCausalLM

    from mechref.model.plain import load_plain

    plain = load_plain(path, dtype)
    return plain if plain is not None else AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()


def load_lora(base_folder: str, adapter: Path, dtype: torch.dtype):
    """The base model with the LoRA adapter applied by PEFT."""
    from peft import PeftModel

    return PeftModel.from_pretrained(load_folder(Path(base_folder), dtype), str(adapter)).eval()


def load_gguf(path: Path, dtype: torch.dtype):
    """A GGUF, as ``transformers`` converts it (its name map and per-architecture fix-ups, the model
    ``from_pretrained(folder, gguf_file=...)`` builds), one tensor at a time: ``from_pretrained``
    itself first dequantizes the whole file into float32 (6.6 GiB for the embedded model)."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    from mechref.model.gguf import gguf_config, iter_dequantized

    config = gguf_config(path)
    with no_init_weights():  # allocated, never written: replaced tensor by tensor below
        plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    expected = dict(plain.named_parameters())
    seen = set()
    for name, tensor in iter_dequantized(path, config, dtype):
        if name not in expected or expected[name].shape != tensor.shape:
            raise MechrefError(f"{path.name}: {name} {tuple(tensor.shape)} does not fit {type(plain).__name__}")
        owner, _, key = name.rpartition(".")
        setattr(plain.get_submodule(owner), key, torch.nn.Parameter(tensor, requires_grad=False))
        seen.add(name)
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
        seen |= {n for n, p in plain.named_parameters() if p is plain.get_input_embeddings().weight}
    missing = sorted(set(dict(plain.named_parameters())) - seen)
    if missing:
        raise MechrefError(f"{path.name} holds no {missing[0]} for {type(plain).__name__}")
    return plain.eval()


@contextlib.contextmanager
def control_vector_applied(hf_model, path: Path) -> Iterator[Any]:
    """``hf_model`` with a llama.cpp control vector file applied as llama.cpp applies it: each
    ``direction.N`` added, at every position, to the output of decoder block ``N``."""
    import numpy as np
    from gguf import GGUFReader

    layers = hf_model.get_decoder().layers
    handles = []

    def adder(vector: Tensor):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden + vector.to(device=hidden.device, dtype=hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook

    try:
        for tensor in GGUFReader(str(path)).tensors:
            block = int(tensor.name.removeprefix("direction."))
            vector = torch.from_numpy(np.array(tensor.data, dtype=np.float32))
            handles.append(layers[block].register_forward_hook(adder(vector)))
        yield hf_model
    finally:
        for handle in handles:
            handle.remove()


def measure_llama_cpp(
    name: str,
    binary: Path,
    gguf: Path,
    model: MechrefModel,
    harmful: Sequence[str],
    max_new_tokens: int,
    control_vector: Path | None = None,
) -> Measured:
    """Greedy replies of a GGUF (with a control vector) run by llama.cpp's own server."""
    from mechref.edits.llamacpp import LlamaServer

    replies = []
    with LlamaServer(binary, gguf, control_vector=control_vector) as server:
        for text in model.chat.format_many(list(harmful)):
            ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
            replies.append(model.decode(server.greedy(ids, max_new_tokens), skip_special_tokens=True).strip())
    what = "llama.cpp llama-server" + (" with --control-vector" if control_vector else "")
    return Measured(name, what, replies, None)
