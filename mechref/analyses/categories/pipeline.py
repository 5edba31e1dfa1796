"""Refusal per harm category as one library call.

:func:`run_categories` computes, on one output folder with resumable stages:

* ``activations``: the residual stream at the refusal direction's layer and position for every
  harmful prompt (both halves of every category) and the harmless prompts of the shared mean;
* ``refusal_tokens``: the tokens whose log-odds are the logit refusal score (the direction run's,
  ``--refusal-tokens``, or derived from the model's own refusals);
* ``logit_scores``: the refusal score of every category's *evaluation* prompts, and the next-token
  KL of held-out harmless prompts, at baseline and with each direction ablated: the global
  direction, every category's, and the top-k principal subspace of the categories for k = 1 … K;
* ``generation``: greedy replies to a sample of every category's evaluation prompts at baseline,
  with the global direction ablated, with the K-dimensional subspace ablated and with the
  directions of the largest categories ablated, judged.

:func:`mechref.analyses.categories.report.report_categories` turns the result into numbers with intervals,
figures, ``summary.json`` and ``index.html``.

Example (the embedded model)::

    from mechref import load_model
    from mechref.analyses.categories import CategoriesSettings, run_categories

    model = load_model(dtype="bfloat16")
    result = run_categories(model, CategoriesSettings(n_generate=2), out="runs/categories")
    print(result.names, result.cosines()[0])
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ContextManager, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechref.analyses.categories.data import OTHER, CategoryData, load_category_data
from mechref.analyses.categories.geometry import Subspace, category_directions, cosine_matrix, principal_subspace
from mechref.analyses.categories.settings import CategoriesSettings
from mechref.analyses.refusal_direction.ensure import ensure_direction
from mechref.capture import capture_residual
from mechref.directions.store import (
    check_direction_fit,
    check_direction_source,
    direction_mismatches,
    load_direction,
)
from mechref.framework.checks import check_layer, check_token_ids
from mechref.framework.clock import StageClock
from mechref.framework.io import fingerprint, read_json, read_jsonl, read_tensors, write_json, write_jsonl, write_tensors
from mechref.framework.ownership import check_output_folder
from mechref.framework.runs import Run
from mechref.framework.vectors import unit
from mechref.generation import generate
from mechref.interventions import directional_ablation, subspace_ablation
from mechref.judges.core import make_judge
from mechref.model.fit import check_prompt_lengths
from mechref.model.loading import MechrefModel
from mechref.model.logits import last_token_logits
from mechref.scoring import RefusalTokens, derive_refusal_tokens, kl_divergence, refusal_score_from_logits

logger = logging.getLogger(__name__)

BASELINE, GLOBAL = "baseline", "global"


def subspace_name(k: int) -> str:
    """The source name of the top-``k`` principal subspace's ablation.

    >>> subspace_name(3)
    'subspace_3'
    """
    return f"subspace_{k}"


@dataclass
class CategoriesResult:
    """What a category study computed."""

    settings: CategoriesSettings
    model: dict  # MechrefModel.identity()
    layer: int
    position: int
    direction_source: str
    direction_mismatches: list[str]
    data: CategoryData
    global_direction: Float[Tensor, " d_model"]
    directions: Float[Tensor, "n_category d_model"]  # difference in means, category's fit half minus harmless
    subspace: Subspace  # principal subspace of the category directions
    refusal_tokens: dict  # token_ids, tokens, how
    sources: list[str]  # baseline, global, every category, subspace_1 … subspace_K
    eval_categories: list[str]  # the category of each evaluation prompt (columns of ``scores``)
    scores: Float[Tensor, "n_source n_eval"]  # refusal score of each evaluation prompt under each source's ablation
    kl_sources: list[str]  # the ablations whose side effect is measured: global and every subspace
    kl: Float[Tensor, "n_kl_source n_kl"]  # next-token KL of held-out harmless prompts against baseline
    generation: list[dict]  # condition, category, instruction, reply, refused
    resumed_stages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The categories' names, in their order."""
        return self.data.names

    def cosines(self) -> Float[Tensor, "n n"]:
        """Cosines of the category directions and, last, the global direction."""
        return cosine_matrix(torch.cat([self.directions, self.global_direction[None]]))


def source_directions(result_directions: Tensor, names: list[str], global_direction: Tensor) -> dict[str, Tensor]:
    """Every direction whose ablation is measured: the global one first, then each category's, by name."""
    return {GLOBAL: global_direction, **{name: result_directions[i] for i, name in enumerate(names)}}


def ablate(model: MechrefModel, source: str, directions: dict[str, Tensor], subspace: Subspace) -> ContextManager:
    """The ablation a source names: none (``baseline``), one direction, or a top-k subspace."""
    if source == BASELINE:
        return contextlib.nullcontext(model)
    if source.startswith("subspace_"):
        return subspace_ablation(model, subspace.top(int(source.removeprefix("subspace_"))))
    return directional_ablation(model, directions[source])


def logit_scores(
    model: MechrefModel,
    sources: list[str],
    directions: dict[str, Tensor],
    subspace: Subspace,
    prompts: list[str],
    harmless: list[str],
    tokens: list[int],
    *,
    kl_sources: Sequence[str] = (),
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Refusal score of ``prompts`` under each source's ablation (``scores[source, prompt]``), and
    for the ``kl_sources`` the next-token KL of ``harmless`` against the unablated model
    (``kl[kl_source, prompt]``). Each source costs one pass over the prompts, plus one over
    ``harmless`` if its KL is asked for (the baseline's is always run, as the reference)."""
    unknown = [s for s in kl_sources if s not in sources or s == BASELINE]
    if unknown:
        raise ValueError(f"KL asked for sources that are not ablated: {unknown}")
    reference = last_token_logits(model, harmless, batch_size=batch_size, progress=False)
    scores = torch.empty(len(sources), len(prompts))
    kl = torch.empty(len(kl_sources), len(harmless))
    for s, source in enumerate(tqdm(sources, desc="ablations", disable=not progress)):
        wanted = prompts + (harmless if source in kl_sources else [])
        with ablate(model, source, directions, subspace):
            logits = last_token_logits(model, wanted, batch_size=batch_size, progress=False)
        scores[s] = refusal_score_from_logits(logits[: len(prompts)], tokens)
        if source in kl_sources:
            kl[list(kl_sources).index(source)] = kl_divergence(reference, logits[len(prompts) :])
    return {"scores": scores, "kl": kl}


def generation_conditions(data: CategoryData, settings: CategoriesSettings, k: int) -> list[str]:
    """Baseline, the global direction, the k-dimensional subspace and the largest categories' directions."""
    largest = [c.name for c in data.categories if c.name != OTHER][: settings.generation_sources]
    return [BASELINE, GLOBAL, subspace_name(k), *largest]


def check_categories(settings: CategoriesSettings, out: str | Path | None = None) -> None:
    """Every check that needs no model: prompt data, direction file, output folders."""
    _load(settings)
    check_direction_source(settings.direction, settings.direction_run)
    if out is not None:
        check_output_folder(out)


def check_categories_fit(model: MechrefModel, settings: CategoriesSettings) -> None:
    """The checks that need the model: layer, the direction's width, token ids, prompt lengths."""
    check_direction_fit(model, settings.direction, settings.layer)
    if settings.refusal_tokens:
        check_token_ids(settings.refusal_tokens, model.d_vocab)
    data = _load(settings)
    prompts = [p for c in data.categories for p in c.fit + c.eval]
    check_prompt_lengths(model, prompts, settings.max_new_tokens, what="harmful prompt")
    check_prompt_lengths(model, data.harmless + data.harmless_kl, 0, what="harmless prompt")


def _load(settings: CategoriesSettings) -> CategoryData:
    return load_category_data(
        settings.harmful,
        settings.data,
        settings.harmless,
        min_prompts=settings.min_prompts,
        max_per_category=settings.max_per_category,
        n_harmless=settings.n_harmless,
        n_kl=settings.n_kl,
        only=settings.categories,
        seed=settings.seed,
    )


def _refusal_tokens(
    model: MechrefModel, settings: CategoriesSettings, stored_path: Path, data: CategoryData, run: Run, base: dict
) -> dict:
    if settings.refusal_tokens:
        ids = list(settings.refusal_tokens)
        return {"token_ids": ids, "tokens": [model.decode(t) for t in ids], "how": "--refusal-tokens"}
    beside = stored_path.parent / "refusal_tokens.json"
    if beside.is_file():
        found = read_json(beside)
        return {"token_ids": found["token_ids"], "tokens": found["tokens"], "how": f"the direction run's ({beside})"}
    derived = run.stage(
        "refusal_tokens",
        {**base, "data": data.fingerprint()},
        lambda: derive_refusal_tokens(
            model,
            [p for c in data.categories for p in c.fit][:32],
            harmless_prompts=data.harmless[:32],
            batch_size=settings.batch_size,
        ),
        save=lambda v, d: write_json(d / "refusal_tokens.json", v.to_dict()),
        load=lambda d: RefusalTokens(**read_json(d / "refusal_tokens.json")),
    )
    return {"token_ids": derived.token_ids, "tokens": derived.tokens, "how": "derived from the model's refusals of fit prompts"}


def run_categories(
    model: MechrefModel, settings: CategoriesSettings | None = None, out: str | Path | None = None, *, echo: bool = True
) -> CategoriesResult:
    """Per-category refusal directions, their transfer, their subspace, and replies (see the module)."""
    settings = settings or CategoriesSettings()
    check_categories(settings, out)
    check_categories_fit(model, settings)
    clock = StageClock(total=5, echo=echo)
    clock.stage("setup", "direction and prompts")
    data = _load(settings)
    stored = (
        load_direction(settings.direction) if settings.direction else ensure_direction(model, settings.direction_run, echo=echo)
    )
    layer = check_layer(stored.layer if settings.layer is None else settings.layer, model.n_layers)
    position = stored.position
    mismatches = direction_mismatches(stored, model)
    for line in mismatches:
        logger.warning("%s", line)
    run = Run(out, resume=settings.resume)
    base = {**model.identity(), "layer": layer, "position": position}
    clock.note(
        f"{len(data.categories)} categories with at least {data.min_prompts} prompts ({data.source}); "
        f"merged into '{OTHER}': {', '.join(data.merged) or 'none'}"
        + (f"; left out (too few): {data.left_out}" if data.left_out else "")
    )

    clock.stage("activations", f"residual stream at layer {layer}, position {position}")
    fit = [(c.name, p) for c in data.categories for p in c.fit]

    def capture() -> dict[str, Tensor]:
        acts = capture_residual(
            model,
            [p for _, p in fit] + data.harmless,
            layers=[layer],
            positions=[position],
            batch_size=settings.batch_size,
            progress=echo,
            desc="activations",
        )[:, 0, 0].float()
        return {"harmful": acts[: len(fit)], "harmless": acts[len(fit) :]}

    acts = run.stage(
        "activations",
        {**base, "data": data.fingerprint()},
        capture,
        save=lambda v, d: write_tensors(d / "activations.safetensors", v),
        load=lambda d: read_tensors(d / "activations.safetensors"),
    )
    by_name = category_directions(acts["harmful"], [n for n, _ in fit], acts["harmless"])
    directions = torch.stack([by_name[name] for name in data.names])
    subspace = principal_subspace(directions)
    k_max = min(settings.n_components, len(data.names))
    global_direction = stored.direction.float()
    named = source_directions(directions, data.names, global_direction)

    clock.stage("logit_scores", "refusal scores and KL under each ablation")
    tokens = _refusal_tokens(model, settings, Path(stored.path), data, run, base)
    clock.note(f"refusal tokens {tokens['tokens']} ({tokens['how']})")
    subspaces = [subspace_name(k) for k in range(1, k_max + 1)]
    sources = [BASELINE, GLOBAL, *data.names, *subspaces]
    evaluation = [(c.name, p) for c in data.categories for p in c.eval]
    measured = run.stage(
        "logit_scores",
        {
            **base,
            "data": data.fingerprint(),
            "sources": sources,
            "tokens": tokens["token_ids"],
            "directions": fingerprint(directions.tolist()),
            "global": fingerprint(global_direction.tolist()),
        },
        lambda: logit_scores(
            model,
            sources,
            named,
            subspace,
            [p for _, p in evaluation],
            data.harmless_kl,
            tokens["token_ids"],
            kl_sources=[GLOBAL, *subspaces],
            batch_size=settings.batch_size,
            progress=echo,
        ),
        save=lambda v, d: write_tensors(d / "logit_scores.safetensors", v),
        load=lambda d: read_tensors(d / "logit_scores.safetensors"),
    )

    conditions = generation_conditions(data, settings, k_max)
    clock.stage("generation", f"greedy replies under {', '.join(conditions)}")
    sample = [(c.name, p) for c in data.categories for p in c.eval[: settings.n_generate]]

    def replies() -> list[dict]:
        rows = []
        for condition in conditions:
            clock.note(f"{condition}: {len(sample)} replies")
            with ablate(model, condition, named, subspace):
                texts = generate(
                    model,
                    [p for _, p in sample],
                    max_new_tokens=settings.max_new_tokens,
                    batch_size=settings.generation_batch_size,
                    progress=echo,
                )
            rows += [
                {"condition": condition, "category": name, "instruction": p, "reply": t} for (name, p), t in zip(sample, texts)
            ]
        return rows

    rows = run.stage(
        "generation",
        {
            **base,
            "data": data.fingerprint(),
            "conditions": conditions,
            "n_generate": settings.n_generate,
            "max_new_tokens": settings.max_new_tokens,
            "directions": fingerprint(directions.tolist()),
            "global": fingerprint(global_direction.tolist()),
        },
        replies,
        save=lambda v, d: write_jsonl(d / "replies.jsonl", v),
        load=lambda d: read_jsonl(d / "replies.jsonl"),
    )
    clock.stage("judging", f"judging {len(rows)} replies ({settings.judge})")
    judge = make_judge(settings.judge, model)
    verdicts = judge.judge_many([r["reply"] for r in rows], [r["instruction"] for r in rows])
    rows = [{**r, "refused": bool(v)} for r, v in zip(rows, verdicts)]
    clock.finish()
    return CategoriesResult(
        settings=settings,
        model=model.identity(),
        layer=layer,
        position=position,
        direction_source=str(stored.path),
        direction_mismatches=mismatches,
        data=data,
        global_direction=unit(global_direction, model.d_model),
        directions=directions,
        subspace=subspace,
        refusal_tokens=tokens,
        sources=sources,
        eval_categories=[name for name, _ in evaluation],
        scores=measured["scores"],
        kl_sources=[GLOBAL, *subspaces],
        kl=measured["kl"],
        generation=rows,
        resumed_stages=list(run.resumed),
        timings=clock.timings,
    )
