"""Selecting the refusal direction among the candidates (Arditi et al. 2024, appendix C).

Each candidate ``r`` at (position, layer) gets three scores on the validation prompts:

* **bypass**: mean refusal score of the harmful prompts with ``r`` ablated everywhere (lower is better);
* **induce**: mean refusal score of the harmless prompts with ``r`` added at its layer;
* **KL**: mean KL divergence of the harmless prompts' last-position distribution under ablation.

Candidates in the last 20% of layers, with induce <= 0, or with KL > 0.1 are discarded; the one
with the lowest bypass score is chosen.

``mode="cosmic"`` chooses by activations alone, with no refusal token and no generated text
(:mod:`mechref.analyses.refusal_direction.cosmic`), then measures the three scores of the chosen candidate only.

``mode="exhaustive"`` scores every candidate: 3 passes over the validation sets each, which on a
CPU takes most of an hour for a 1.5B model. ``mode="fast"`` (the default) skips the layers the
filter would discard anyway, ranks the rest by a bypass score measured on a few validation
prompts only (a cheap proxy), and gives the full three scores to the best ``top_k`` by that
proxy, widening to the next ``top_k`` only if all of them are filtered out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

import torch
from tqdm.auto import tqdm

from mechref.analyses.refusal_direction.cosmic import cosmic_scores
from mechref.directions.candidates import CandidateDirections
from mechref.errors import AllCandidatesFilteredError
from mechref.framework.io import read_json, read_tensors, write_json, write_tensors
from mechref.framework.vectors import unit
from mechref.interventions import ablation_hook_names, activation_addition, directional_ablation
from mechref.model.batching import as_texts
from mechref.model.loading import MechrefModel
from mechref.model.logits import last_token_logits
from mechref.model.prefix import SharedPrefix, shared_prefix_length
from mechref.scoring import kl_divergence, refusal_score_from_logits


@dataclass
class SelectionSettings:
    """How candidates are scored and filtered (defaults follow the paper)."""

    mode: Literal["fast", "exhaustive", "cosmic", "auto"] = "fast"
    kl_threshold: float = 0.1
    induce_threshold: float = 0.0
    prune_layer_fraction: float = 0.2
    proxy_prompts: int = 8
    top_k: int = 8
    batch_size: int = 32
    cosmic_prompts: int = 16
    cosmic_layer_fraction: float = 0.1

    def __post_init__(self):
        if self.mode not in ("fast", "exhaustive", "cosmic", "auto"):
            raise ValueError(f"mode must be 'fast', 'exhaustive', 'cosmic' or 'auto', got {self.mode!r}")


@dataclass
class CandidateScores:
    position: int
    layer: int
    bypass: float | None = None
    induce: float | None = None
    kl: float | None = None
    proxy_bypass: float | None = None
    filtered_by: list[str] = field(default_factory=list)
    cosmic: float | None = None  # COSMIC score: ablation cosine + addition cosine (higher is better)
    cosmic_ablation: float | None = None
    cosmic_addition: float | None = None

    @property
    def evaluated(self) -> bool:
        """Whether the candidate was given full scores (fast mode scores only the best of the proxy)."""
        return self.bypass is not None

    @property
    def kept(self) -> bool:
        """Whether it was scored and passed every filter."""
        return self.evaluated and not self.filtered_by


@dataclass
class SelectionResult:
    """The chosen candidate, every candidate's scores, and what the search cost."""

    position: int
    layer: int
    direction: torch.Tensor
    scores: list[CandidateScores]
    baseline_harmful: float
    baseline_harmless: float
    n_forward_passes: int
    n_prompt_passes: int
    settings: SelectionSettings
    reference_layers: list[int] | None = None  # cosmic mode: the layers its cosines are read at
    fallback: str | None = None  # auto mode: why the paper's selection gave way to cosmic's (None: it did not)

    @property
    def chosen(self) -> CandidateScores:
        """The scores of the selected candidate."""
        return next(s for s in self.scores if (s.position, s.layer) == (self.position, self.layer))

    def to_dict(self) -> dict:
        """The selection as written to ``selection.json``."""
        return {
            "position": self.position,
            "layer": self.layer,
            "bypass_score": self.chosen.bypass,
            "induce_score": self.chosen.induce,
            "kl": self.chosen.kl,
            "baseline_refusal_score": {"harmful_val": self.baseline_harmful, "harmless_val": self.baseline_harmless},
            "n_forward_passes": self.n_forward_passes,
            "n_prompt_passes": self.n_prompt_passes,
            "settings": asdict(self.settings),
            "reference_layers": self.reference_layers,
            "fallback": self.fallback,
            "scores": [asdict(s) for s in self.scores],
        }

    def save(self, folder: str | Path, model: str | dict) -> None:
        """Write ``direction.safetensors`` and ``selection.json``. ``model`` is the model's name or its
        :meth:`~mechref.model.loading.MechrefModel.identity` (name, dtype, system prompt, chat template),
        stored as metadata with the code version, so that a later user of the direction can tell
        what it was computed on."""
        from mechref.framework.io import fingerprint
        from mechref.framework.runs import code_version

        folder = Path(folder)
        identity = model if isinstance(model, dict) else {"model": model}
        metadata = {"layer": str(self.layer), "position": str(self.position), "model": str(identity["model"])}
        if "dtype" in identity:
            metadata.update(
                dtype=str(identity["dtype"]),
                system_prompt=fingerprint(identity.get("system_prompt")),
                chat_template=str(identity.get("chat_template")),
                code_version=code_version(),
            )
        write_tensors(folder / "direction.safetensors", {"direction": self.direction}, metadata=metadata)
        write_json(folder / "selection.json", self.to_dict())

    @classmethod
    def load(cls, folder: str | Path) -> SelectionResult:
        """The selection saved in ``folder`` (its ``selection.json`` and ``direction.safetensors``)."""
        folder = Path(folder)
        data = read_json(folder / "selection.json")
        return cls(
            position=data["position"],
            layer=data["layer"],
            direction=read_tensors(folder / "direction.safetensors")["direction"],
            scores=[CandidateScores(**s) for s in data["scores"]],
            baseline_harmful=data["baseline_refusal_score"]["harmful_val"],
            baseline_harmless=data["baseline_refusal_score"]["harmless_val"],
            n_forward_passes=data["n_forward_passes"],
            n_prompt_passes=data["n_prompt_passes"],
            settings=SelectionSettings(**data["settings"]),
            reference_layers=data.get("reference_layers"),
            fallback=data.get("fallback"),
        )


class _Scorer:
    """Runs the scoring passes and counts them."""

    def __init__(self, model, refusal_tokens, batch_size):
        self.model, self.tokens, self.batch_size = model, list(refusal_tokens), batch_size
        self.n_forward_passes = 0
        self.n_prompt_passes = 0

    def logits(self, prompts: Sequence[str]) -> torch.Tensor:
        self.n_forward_passes += math.ceil(len(prompts) / self.batch_size)
        self.n_prompt_passes += len(prompts)
        return last_token_logits(self.model, prompts, batch_size=self.batch_size, progress=False)

    def score(self, prompts: Sequence[str]) -> float:
        return float(refusal_score_from_logits(self.logits(prompts), self.tokens).mean())

    def ablated_scores(self, directions: Sequence[torch.Tensor], prompts: Sequence[str], progress: bool = True) -> list[float]:
        """Mean refusal score of ``prompts`` with each direction ablated, for many directions at once.

        Each batch row pairs one prompt with one direction, and the ablation hooks project every
        row out along its own direction. On a CPU a forward pass costs about as much to read the
        weights as to compute a few prompts, so scoring candidates a few prompts at a time wastes
        most of it; packing (candidate, prompt) rows into full batches does not. The prompts'
        shared prefix (system prompt, role marker) is run once per candidate, under that
        candidate's ablation, and its key/value cache reused by the candidate's rows.
        """
        model = self.model
        token_lists = model.tokenizer(as_texts(model, list(prompts), True), add_special_tokens=False)["input_ids"]
        n_prefix = max(0, shared_prefix_length(token_lists) - 1) if len(token_lists) > 1 else 0
        # Keep at least one token after the prefix in every prompt; left-pad the rest.
        suffixes = [ids[n_prefix:] for ids in token_lists]
        width = max(len(ids) for ids in suffixes)
        pad = model.tokenizer.pad_token_id
        suffix_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        suffix_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(suffixes):
            suffix_ids[row, width - len(ids) :] = torch.tensor(ids)
            suffix_mask[row, width - len(ids) :] = 1
        units = torch.stack([unit(d, model.d_model) for d in directions]).to(model.device)
        current: dict[str, torch.Tensor] = {}

        def project_rows(x: torch.Tensor, hook=None) -> torch.Tensor:
            d = current["d"].to(x.dtype).unsqueeze(1)  # [batch, 1, d_model]
            return x - (x * d).sum(-1, keepdim=True) * d

        n = len(prompts)
        group = max(1, self.batch_size // n)  # candidates per forward pass
        scores = torch.empty(len(directions), n)
        bar = tqdm(total=len(directions), desc="proxy bypass", unit="cand", disable=not progress, leave=False)
        with model.hooks([(name, project_rows) for name in ablation_hook_names(model)]), model.inference_mode():
            for start in range(0, len(directions), group):
                d = units[start : start + group]
                g = len(d)
                cache = None
                if n_prefix:
                    # One prefix row per candidate, under that candidate's ablation; each cache is used once.
                    current["d"] = d
                    prefix = SharedPrefix.run(model, torch.tensor(token_lists[0][:n_prefix]).expand(g, -1))
                    cache = prefix.cache_for(n, copy_cache=False)
                    self.n_forward_passes += 1
                current["d"] = d.repeat_interleave(n, dim=0)
                mask = torch.cat([torch.ones(g * n, n_prefix, dtype=torch.long), suffix_mask.repeat(g, 1)], dim=1)
                logits = (
                    model.forward(
                        suffix_ids.repeat(g, 1).to(model.device),
                        mask.to(model.device),
                        last_logits_only=True,
                        past_key_values=cache,
                    )[:, -1]
                    .float()
                    .cpu()
                )
                scores[start : start + g] = refusal_score_from_logits(logits, self.tokens).view(g, n)
                self.n_forward_passes += 1
                self.n_prompt_passes += g * n
                bar.update(g)
        bar.close()
        return scores.mean(1).tolist()


def select_direction(
    model: MechrefModel,
    candidates: CandidateDirections,
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    refusal_tokens: Sequence[int],
    settings: SelectionSettings | None = None,
    *,
    progress: bool = True,
) -> SelectionResult:
    """Score the candidates and return the chosen direction (raises :class:`AllCandidatesFilteredError`).

    ``mode="auto"``: the paper's selection (``fast``); where its filters leave no candidate (a model
    that refuses weakly: no candidate induces refusal), the choice by activation cosines
    (``cosmic``), which needs neither refusal tokens nor generation, with the reason in the
    result's ``fallback`` and the forward passes of both counted."""
    settings = settings or SelectionSettings()
    if settings.mode == "auto":
        try:
            return replace(select_direction(model, candidates, harmful_val, harmless_val, refusal_tokens,
                                            replace(settings, mode="fast"), progress=progress), settings=settings)  # fmt: skip
        except AllCandidatesFilteredError as error:
            chosen = select_direction(
                model, candidates, harmful_val, harmless_val, refusal_tokens, replace(settings, mode="cosmic"), progress=progress
            )
            reasons = sorted({r for s in error.scores for r in s.filtered_by})
            return replace(
                chosen,
                settings=settings,
                n_forward_passes=chosen.n_forward_passes + error.n_forward_passes,
                n_prompt_passes=chosen.n_prompt_passes + error.n_prompt_passes,
                fallback=(
                    f"the paper's selection filtered out all {len(error.scores)} candidates ({'; '.join(reasons)}): "
                    "chosen by activation cosines instead (cosmic)"
                ),
            )
    harmful_val, harmless_val = list(harmful_val), list(harmless_val)
    scorer = _Scorer(model, refusal_tokens, settings.batch_size)
    baseline_harmful = scorer.score(harmful_val)
    baseline_logits = scorer.logits(harmless_val)
    baseline_harmless = float(refusal_score_from_logits(baseline_logits, refusal_tokens).mean())

    cutoff = int(candidates.n_layers * (1.0 - settings.prune_layer_fraction))
    table = {(p, l): CandidateScores(p, l) for p in candidates.positions for l in range(candidates.n_layers)}
    # At layer 0 the template positions hold the same token embeddings for every prompt, so
    # their difference in means is exactly zero: such candidates have no direction to score.
    norms = candidates.directions.float().norm(dim=-1)
    for (p, l), entry in table.items():
        if norms[candidates.positions.index(p), l] <= 1e-6 * float(norms.max()):
            entry.filtered_by = ["zero vector"]
    scorable = [k for k, e in table.items() if not e.filtered_by]

    def full_scores(keys):
        bar = tqdm(keys, desc="scoring candidates", unit="cand", disable=not progress, leave=False)
        for key in bar:
            entry = table[key]
            direction = candidates.get(*key)
            with directional_ablation(model, direction):
                entry.bypass = scorer.score(harmful_val)
                entry.kl = float(kl_divergence(baseline_logits, scorer.logits(harmless_val)).mean())
            with activation_addition(model, direction, entry.layer, 1.0):
                entry.induce = scorer.score(harmless_val)
            entry.filtered_by = _filters(entry, settings, cutoff)
            bar.set_postfix(bypass=f"{entry.bypass:.2f}")

    if settings.mode != "exhaustive":
        for key in scorable:
            if key[1] >= cutoff:
                table[key].filtered_by = ["last layers (not scored)"]
    reference_layers = None
    if settings.mode == "cosmic":
        # Chosen by activations alone; the paper's three scores are then measured for the chosen
        # candidate only, so that both selections can be compared on the same numbers.
        found = cosmic_scores(
            model,
            candidates,
            harmful_val[: settings.cosmic_prompts],
            harmless_val[: settings.cosmic_prompts],
            layer_fraction=settings.cosmic_layer_fraction,
            prune_layer_fraction=settings.prune_layer_fraction,
            batch_size=settings.batch_size,
            progress=progress,
        )
        scorer.n_forward_passes += found.n_forward_passes
        scorer.n_prompt_passes += found.n_prompt_passes
        for key, (ablation, addition) in found.scores.items():
            entry = table[key]
            entry.cosmic_ablation, entry.cosmic_addition = round(ablation, 6), round(addition, 6)
            entry.cosmic = round(ablation + addition, 6)
        full_scores([found.best()])
        best, reference_layers = table[found.best()], found.reference_layers
    else:
        if settings.mode == "exhaustive":
            full_scores(scorable)
        else:
            eligible = [k for k in scorable if k[1] < cutoff]
            if not eligible:  # e.g. two layers: layer 0 holds zero vectors, layer 1 is pruned
                raise AllCandidatesFilteredError(list(table.values()), settings, scorer.n_forward_passes, scorer.n_prompt_passes)
            subset = harmful_val[: settings.proxy_prompts]
            proxy = scorer.ablated_scores([candidates.get(*key) for key in eligible], subset, progress=progress)
            for key, value in zip(eligible, proxy):
                table[key].proxy_bypass = value
            ranked = sorted(eligible, key=lambda k: _number(table[k].proxy_bypass))
            for start in range(0, len(ranked), settings.top_k):
                full_scores(ranked[start : start + settings.top_k])
                if any(table[k].kept for k in ranked[: start + settings.top_k]):
                    break
        kept = [s for s in table.values() if s.kept]
        if not kept:
            raise AllCandidatesFilteredError(list(table.values()), settings, scorer.n_forward_passes, scorer.n_prompt_passes)
        best = min(kept, key=lambda s: _number(s.bypass))
    return SelectionResult(
        position=best.position,
        layer=best.layer,
        direction=candidates.get(best.position, best.layer),
        scores=list(table.values()),
        baseline_harmful=baseline_harmful,
        baseline_harmless=baseline_harmless,
        n_forward_passes=scorer.n_forward_passes,
        n_prompt_passes=scorer.n_prompt_passes,
        settings=settings,
        reference_layers=reference_layers,
    )


def _filters(entry: CandidateScores, settings: SelectionSettings, cutoff: int) -> list[str]:
    reasons = []
    if entry.layer >= cutoff:
        reasons.append(f"layer >= {cutoff} (last {settings.prune_layer_fraction:.0%})")
    if entry.induce is not None and not entry.induce > settings.induce_threshold:
        reasons.append(f"induce <= {settings.induce_threshold}")
    if entry.kl is not None and entry.kl > settings.kl_threshold:
        reasons.append(f"KL > {settings.kl_threshold}")
    if entry.bypass is not None and not math.isfinite(entry.bypass):
        reasons.append("non-finite bypass")
    return reasons


def _number(value: float | None) -> float:
    """A score that was computed (the callers only rank scored candidates)."""
    if value is None:
        raise ValueError("an unscored candidate cannot be ranked")
    return value
