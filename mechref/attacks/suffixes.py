"""Adversarial suffixes as data: the ones mechref ships, suffix files, and random controls.

A suffix file is the JSON that ``python -m mechref.attacks.gcg`` writes: the suffix text and
token ids plus its provenance (command, seed, settings, loss curve, the replies it produces).
mechref ships the suffixes it found for its embedded models in ``mechref/data/suffixes/``.

>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> control = random_suffix(model, 5, seed=0)
>>> len(control.token_ids), control.text.startswith(" ")
(5, True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from mechref.attacks.gcg import allowed_token_mask
from mechref.errors import DataFormatError
from mechref.framework.io import read_user_json
from mechref.model.loading import MechrefModel


@dataclass
class Suffix:
    """A suffix appended to instructions, with where it came from."""

    text: str
    token_ids: list[int]
    source: str
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The suffix as written to a file: text, token ids, where it came from."""
        return {"text": self.text, "token_ids": self.token_ids, "source": self.source}


def shipped_suffixes() -> list[str]:
    """Names of the models mechref ships a GCG suffix for."""
    folder = resources.files("mechref.data") / "suffixes"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def shipped_suffix(model_name: str) -> Suffix:
    """The GCG suffix mechref found for an embedded model (see its ``provenance``)."""
    path = resources.files("mechref.data") / "suffixes" / f"{model_name}.json"
    if not path.is_file():
        raise DataFormatError(
            f"mechref ships no adversarial suffix for model {model_name!r} (it has: {', '.join(shipped_suffixes()) or 'none'}); "
            "pass --suffix TEXT or --suffix-file FILE, or search one with --run-gcg / python -m mechref.attacks.gcg"
        )
    record = json.loads(path.read_text(encoding="utf-8"))
    return _from_record(record, f"shipped:{model_name}")


def load_suffix_file(path: str | Path) -> Suffix:
    """A suffix file written by ``python -m mechref.attacks.gcg`` (or any JSON with ``"suffix"``)."""
    return _from_record(read_user_json(path, "suffix file"), str(path))


def _from_record(record: dict, source: str) -> Suffix:
    if not isinstance(record, dict) or not isinstance(record.get("suffix"), str) or not record["suffix"]:
        raise DataFormatError(f'{source}: a suffix file is a JSON object with a non-empty string field "suffix"')
    return Suffix(text=record["suffix"], token_ids=list(record.get("suffix_ids") or []), source=source, provenance=record)


def text_suffix(model: MechrefModel, text: str) -> Suffix:
    """A suffix given as text (a leading space is added when missing, as GCG's suffixes have one)."""
    if not text.strip():
        raise ValueError("the suffix is empty; pass some text")
    text = text if text[0].isspace() else " " + text
    return Suffix(text=text, token_ids=model.tokenizer(text, add_special_tokens=False)["input_ids"], source="--suffix")


def random_suffix(model: MechrefModel, n_tokens: int, seed: int = 0, max_tries: int = 1000) -> Suffix:
    """A seeded random suffix of exactly ``n_tokens`` tokens (printable ASCII, starting with a space).

    Tokens are drawn from the same vocabulary GCG may use; draws whose text would re-tokenize to
    a different length are redrawn, so the control has the adversarial suffix's token length.
    """
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be at least 1, got {n_tokens}")
    allowed = allowed_token_mask(model).nonzero().flatten()
    spaced = torch.tensor([int(i) for i in allowed if model.decode(int(i)).startswith(" ")])
    if len(spaced) == 0:
        raise ValueError("the tokenizer has no printable tokens that start with a space")
    generator = torch.Generator().manual_seed(seed)
    for _ in range(max_tries):
        first = spaced[torch.randint(len(spaced), (1,), generator=generator)]
        rest = allowed[torch.randint(len(allowed), (n_tokens - 1,), generator=generator)]
        ids = torch.cat([first, rest]).tolist()
        text = model.decode(ids)
        if len(model.tokenizer(text, add_special_tokens=False)["input_ids"]) == n_tokens:
            return Suffix(text=text, token_ids=ids, source=f"random(seed={seed}, n_tokens={n_tokens})")
    raise RuntimeError(f"no random suffix of {n_tokens} tokens re-tokenized to its own length in {max_tries} draws")
