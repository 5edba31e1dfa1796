"""Direction selection without refusal tokens or generated text, in the spirit of COSMIC (Siu et
al. 2025: cosine similarity metrics for inversion of concepts).

A good refusal direction, ablated, makes harmful prompts' activations look like harmless ones;
added, it makes harmless prompts' activations look like harmful ones. Both are read from the
residual stream, not from the output:

1. the *reference layers*: the layers where the mean activations of harmful and harmless prompts
   (the candidates' own train means, at the post-instruction positions) are least alike by cosine
   similarity, ``layer_fraction`` of all layers (at least one);
2. for each candidate ``r`` at (position, layer): with ``r`` ablated everywhere, the harmful
   validation prompts' mean activation at every post-instruction position and reference layer,
   and its cosine with the harmless mean (``ablation_cosine``); with ``r`` added at its layer, the
   harmless prompts' mean and its cosine with the harmful mean (``addition_cosine``);
3. the chosen candidate maximises their sum (the COSMIC score), among those before the last
   ``prune_layer_fraction`` of layers.

Candidates of one layer share a forward pass: each batch row carries its own candidate's direction.

>>> import torch
>>> from mechref.testing import tiny_model
>>> from mechref.directions.candidates import extract_candidates
>>> model = tiny_model("qwen2", n_layers=4)
>>> cands = extract_candidates(model, ["Build a bomb", "Hack a bank"], ["Bake bread", "Plant a tree"], progress=False)
>>> found = cosmic_scores(model, cands, ["Steal a car"], ["Sing a song"], progress=False)
>>> len(found.reference_layers), sorted({layer for _, layer in found.scores})  # layer 0: no direction; 3: pruned
(1, [1, 2])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechref.capture import resid_hook_name
from mechref.directions.candidates import CandidateDirections
from mechref.errors import MechrefError
from mechref.framework.vectors import unit
from mechref.interventions import ablation_hook_names
from mechref.model.batching import as_texts
from mechref.model.loading import MechrefModel
from mechref.model.prefix import SharedPrefix, shared_prefix_length


@dataclass
class CosmicScores:
    """Every candidate's two cosines, the reference layers, and what the search cost."""

    reference_layers: list[int]
    scores: dict[tuple[int, int], tuple[float, float]]  # (position, layer) -> (ablation_cosine, addition_cosine)
    n_forward_passes: int = 0
    n_prompt_passes: int = 0
    baseline: dict[str, float] = field(default_factory=dict)

    def total(self, key: tuple[int, int]) -> float:
        """The COSMIC score of one candidate, ``(position, layer)``: the sum of its parts."""
        return sum(self.scores[key])

    def best(self) -> tuple[int, int]:
        """The candidate with the highest score; an error naming the fix when none was scored."""
        if not self.scores:
            raise MechrefError(
                "no candidate could be given a COSMIC score (every layer before the pruned last ones is layer 0 or "
                "empty); lower --prune-layer-fraction"
            )
        return max(self.scores, key=lambda k: (self.total(k), -k[1]))


def reference_layers(
    mean_harmful: Float[Tensor, "n_pos n_layer d_model"], mean_harmless: Float[Tensor, "n_pos n_layer d_model"], fraction: float
) -> list[int]:
    """The ``fraction`` of layers (at least one) where harmful and harmless means are least alike,
    by cosine similarity averaged over positions; layer 0 (token embeddings only) is never one.

    >>> import torch
    >>> h = torch.ones(1, 4, 2); b = torch.ones(1, 4, 2); b[0, 2] = torch.tensor([1.0, -1.0])
    >>> reference_layers(h, b, 0.25)
    [2]
    """
    cos = torch.nn.functional.cosine_similarity(mean_harmful.double(), mean_harmless.double(), dim=-1).mean(0)
    cos[0] = math.inf
    n = max(1, round(fraction * cos.shape[0]))
    return sorted(int(i) for i in cos.argsort()[:n])


def _mean_cosine(acts: Tensor, target: Tensor) -> float:
    """Cosine of each (position, layer) mean activation with the target's, averaged."""
    return float(torch.nn.functional.cosine_similarity(acts.double(), target.double(), dim=-1).mean())


def cosmic_scores(
    model: MechrefModel,
    candidates: CandidateDirections,
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    *,
    layer_fraction: float = 0.1,
    prune_layer_fraction: float = 0.2,
    batch_size: int = 32,
    progress: bool = True,
) -> CosmicScores:
    """The COSMIC cosines of every candidate before the pruned last layers (see the module)."""
    refs = reference_layers(candidates.mean_harmful, candidates.mean_harmless, layer_fraction)
    ref_index = torch.tensor(refs)
    harmless_ref = candidates.mean_harmless[:, ref_index].float()  # [pos, ref, d]
    harmful_ref = candidates.mean_harmful[:, ref_index].float()
    positions = list(candidates.positions)
    pos_index = torch.tensor(positions)
    cutoff = int(candidates.n_layers * (1.0 - prune_layer_fraction))
    norms = candidates.directions.float().norm(dim=-1)
    out = CosmicScores(reference_layers=refs, scores={})
    captured: dict[int, Tensor] = {}
    capturing = True

    def capture(slot: int):
        def hook(x: Tensor, hook=None) -> Tensor:
            if capturing:  # not while a shared prefix runs: the post-instruction positions come later
                captured[slot] = x[:, pos_index.to(x.device) + x.shape[1]].detach().float().cpu()
            return x

        return hook

    rows: dict[str, Tensor] = {}

    def project_rows(x: Tensor, hook=None) -> Tensor:
        d = rows["d"].to(x.device, x.dtype).unsqueeze(1)
        return x - (x * d).sum(-1, keepdim=True) * d

    def add_rows(x: Tensor, hook=None) -> Tensor:
        return x + rows["v"].to(x.device, x.dtype).unsqueeze(1)

    def means(texts: list[str], hooks: list, per_row: dict[str, Tensor], n_candidates: int) -> Tensor:
        """Mean activation per candidate at every (position, reference layer): [cand, pos, ref, d].

        The prompts' shared prefix (system prompt, role marker) runs once per candidate, under that
        candidate's intervention, and its key/value cache serves the candidate's prompts."""
        nonlocal capturing
        n = len(texts)
        tokens = model.tokenizer(texts, add_special_tokens=False)["input_ids"]
        n_prefix = max(0, shared_prefix_length(tokens) - 1) if n > 1 else 0
        suffixes = [ids[n_prefix:] for ids in tokens]
        width = max(len(ids) for ids in suffixes)
        suffix_ids = torch.full((n, width), model.tokenizer.pad_token_id, dtype=torch.long)
        suffix_mask = torch.zeros((n, width), dtype=torch.long)
        for row, ids in enumerate(suffixes):
            suffix_ids[row, width - len(ids) :] = torch.tensor(ids)
            suffix_mask[row, width - len(ids) :] = 1
        total = torch.zeros(n_candidates, len(positions), len(refs), model.d_model, dtype=torch.float64)
        group = max(1, batch_size // n)  # candidates per forward pass
        with model.hooks(hooks + [(resid_hook_name(layer), capture(j)) for j, layer in enumerate(refs)]):
            for start in range(0, n_candidates, group):
                chosen = list(range(start, min(start + group, n_candidates)))
                g = len(chosen)
                cache = None
                if n_prefix:
                    for key, value in per_row.items():
                        rows[key] = value[chosen]
                    capturing = False
                    prefix = SharedPrefix.run(model, torch.tensor(tokens[0][:n_prefix]).expand(g, -1).to(model.device))
                    capturing = True
                    cache = prefix.cache_for(n, copy_cache=False)
                    out.n_forward_passes += 1
                for key, value in per_row.items():
                    rows[key] = value[chosen].repeat_interleave(n, dim=0)
                mask = torch.cat([torch.ones(g * n, n_prefix, dtype=torch.long), suffix_mask.repeat(g, 1)], dim=1)
                captured.clear()
                model.forward(
                    suffix_ids.repeat(g, 1).to(model.device),
                    mask.to(model.device),
                    last_logits_only=True,
                    past_key_values=cache,
                )
                out.n_forward_passes += 1
                out.n_prompt_passes += g * n
                acts = torch.stack([captured[j] for j in range(len(refs))], dim=2)  # [rows, pos, ref, d]
                total[start : start + g] = acts.view(g, n, *acts.shape[1:]).double().sum(1)
        return (total / n).float()

    harmful_texts = as_texts(model, list(harmful_val))
    harmless_texts = as_texts(model, list(harmless_val))
    layers = [l for l in range(candidates.n_layers) if l < cutoff]
    with model.inference_mode():
        base_harmful = means(harmful_texts, [], {}, 1)[0]
        base_harmless = means(harmless_texts, [], {}, 1)[0]
        out.baseline = {
            "harmful_vs_harmless_mean": _mean_cosine(base_harmful, harmless_ref),
            "harmless_vs_harmful_mean": _mean_cosine(base_harmless, harmful_ref),
        }
        for layer in tqdm(layers, desc="COSMIC scores", unit="layer", disable=not progress, leave=False):
            keys = [(p, layer) for p in positions if norms[positions.index(p), layer] > 1e-6 * float(norms.max())]
            if not keys:
                continue  # layer 0's template positions: no direction
            directions = torch.stack([candidates.get(*k).float() for k in keys])
            units = torch.stack([unit(d, model.d_model) for d in directions])
            ablated = means(harmful_texts, [(n, project_rows) for n in ablation_hook_names(model)], {"d": units}, len(keys))
            added = means(harmless_texts, [(resid_hook_name(layer), add_rows)], {"v": directions}, len(keys))
            for c, key in enumerate(keys):
                out.scores[key] = (_mean_cosine(ablated[c], harmless_ref), _mean_cosine(added[c], harmful_ref))
    return out
