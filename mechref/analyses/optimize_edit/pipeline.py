"""The edit search as one library call.

:func:`run_optimize_edit` writes, into one output folder:

* ``search``: an Optuna study (multi-objective TPE, seeded, in ``optuna.db`` beside the run, so an
  interrupted search continues where it stopped) over :mod:`mechref.analyses.optimize_edit.space`. Each trial
  applies its edit with hooks (:func:`~mechref.interventions.weighted_ablation`, exactly the weight
  edit) and scores two cheap proxies on val prompts: the mean logit refusal score of the harmful
  ones and the mean first-token KL of the harmless ones against the unedited model. The first
  trial is always today's edit (the analysis's direction removed in full everywhere), the reference
  every point is measured against.
* ``confirm``: the reference and the chosen points of the front (the knee, and the least-KL point
  whose refusal proxy is at most the reference's) measured on held-out test prompts: greedy replies
  to harmful prompts (judged: k/n, Wilson interval, McNemar against the reference) and the
  first-token KL on harmless ones (mean, 95% interval).

Example (the embedded model)::

    from mechref import load_model
    from mechref.analyses.optimize_edit import OptimizeEditSettings, run_optimize_edit

    model = load_model(dtype="bfloat16")
    result = run_optimize_edit(model, OptimizeEditSettings(n_trials=20), out="runs/optimize_edit")
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mechref.analyses.optimize_edit.settings import OptimizeEditSettings
from mechref.analyses.optimize_edit.space import EditPoint, layer_range, point_from_params, reference_params, suggest
from mechref.analyses.refusal_direction.ensure import ensure_direction
from mechref.data import bundled
from mechref.data.prompts import load_refusal_direction_splits
from mechref.directions.candidates import CandidateDirections
from mechref.directions.store import direction_mismatches
from mechref.edits.orthogonalize import check_orthogonalizable, export_orthogonalized
from mechref.errors import MechrefError
from mechref.framework.clock import StageClock
from mechref.framework.io import fingerprint, read_json, write_json
from mechref.framework.ownership import check_output_folder
from mechref.framework.runs import Run
from mechref.generation import generate
from mechref.interventions import weighted_ablation
from mechref.judges.core import make_judge
from mechref.model.loading import MechrefModel
from mechref.model.logits import last_token_logits
from mechref.scoring import kl_divergence, refusal_score_from_logits

logger = logging.getLogger(__name__)


@dataclass
class OptimizeEditResult:
    settings: OptimizeEditSettings
    model: dict
    reference_layer: int
    position: int
    refusal_tokens: list[int]
    prompts: dict[str, int]
    trials: list[dict]  # number, params, point, refusal_score, refusing_share, kl, pareto
    confirmed: list[dict]  # label, trial, point, replies, refusals, kl
    search_seconds: float
    exported_model: str | None = None
    resumed_stages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def check_optimize_edit(settings: OptimizeEditSettings, out: str | Path | None = None) -> None:
    """The checks that need no model: data folder, output folder, export target."""
    if settings.splits is not None:
        load_refusal_direction_splits(settings.splits)
    check_output_folder(settings.direction_run)
    if out is None:
        raise MechrefError("the search keeps its study on disk: give an output folder (--out)")
    check_output_folder(out)
    if settings.export_model is not None:
        from mechref.framework.ownership import check_export_target

        check_export_target(settings.export_model, settings.overwrite)
    try:
        import optuna  # noqa: F401
    except ImportError as error:
        raise MechrefError('the edit search needs Optuna: pip install "mechref[optimize]"') from error


def _prompts(settings: OptimizeEditSettings) -> dict[str, list[str]]:
    if settings.splits is not None:
        splits = load_refusal_direction_splits(settings.splits)
        get = lambda label, split, n: splits[(label, split)].take(n).instructions
    else:
        get = lambda label, split, n: bundled(label, split).take(n).instructions
    return {
        "search_harmful": get("harmful", "val", settings.n_search),
        "search_harmless": get("harmless", "val", settings.n_search),
        "confirm_harmful": get("harmful", "test", settings.n_confirm),
        "confirm_harmless": get("harmless", "test", settings.n_confirm),
    }


def score_edit(
    model: MechrefModel,
    direction: torch.Tensor,
    point: EditPoint,
    harmful: list[str],
    harmless: list[str],
    tokens: list[int],
    reference_logits: torch.Tensor,
    batch_size: int,
) -> dict[str, float]:
    """The two proxies of one edit: mean refusal score of the harmful prompts, share of them above
    0, and mean first-token KL of the harmless prompts against the unedited model."""
    with weighted_ablation(model, direction, point.strengths(model.n_layers)):
        harmful_logits = last_token_logits(model, harmful, batch_size=batch_size, progress=False)
        harmless_logits = last_token_logits(model, harmless, batch_size=batch_size, progress=False)
    scores = refusal_score_from_logits(harmful_logits, tokens)
    kl = kl_divergence(reference_logits, harmless_logits)
    return {
        "refusal_score": float(scores.mean()),
        "refusing_share": float((scores > 0).float().mean()),
        "kl": float(kl.mean()),
    }


def choose_points(trials: list[dict], reference: dict, n: int) -> list[tuple[str, dict]]:
    """The front's points worth confirming: the least-KL point whose refusal proxy is at most the
    reference's (the same refusal for less damage), then the knee of the front (nearest the ideal
    corner once both objectives are scaled to the front's range), then the next-lowest KL points.

    >>> values = [(-5, 0.1), (-3, 0.02), (-6, 0.3)]
    >>> t = [{"number": i, "refusal_score": s, "kl": k, "pareto": True} for i, (s, k) in enumerate(values)]
    >>> [(label, p["number"]) for label, p in choose_points(t, t[0], 2)]
    [('same refusal, least KL', 0), ('knee of the front', 1)]
    """
    front = [t for t in trials if t["pareto"]]
    chosen: list[tuple[str, dict]] = []
    matching = [t for t in front if t["refusal_score"] <= reference["refusal_score"]]
    if matching:
        chosen.append(("same refusal, least KL", min(matching, key=lambda t: t["kl"])))
    s_lo, s_hi = min(t["refusal_score"] for t in front), max(t["refusal_score"] for t in front)
    k_lo, k_hi = min(t["kl"] for t in front), max(t["kl"] for t in front)

    def distance(t: dict) -> float:
        return ((t["refusal_score"] - s_lo) / ((s_hi - s_lo) or 1)) ** 2 + ((t["kl"] - k_lo) / ((k_hi - k_lo) or 1)) ** 2

    taken = {t["number"] for _, t in chosen}
    for t in sorted(front, key=distance):
        if len(chosen) >= n:
            break
        if t["number"] not in taken:
            chosen.append(("knee of the front" if not any(lbl == "knee of the front" for lbl, _ in chosen) else "front", t))
            taken.add(t["number"])
    return chosen[:n]


def run_optimize_edit(
    model: MechrefModel, settings: OptimizeEditSettings | None = None, out: str | Path | None = None, *, echo: bool = True
) -> OptimizeEditResult:
    """Search edits with Optuna for the front of refusal against KL and write each trial to ``out`` (resumed from
    there); the result (see :class:`OptimizeEditResult`)."""
    import optuna

    settings = settings or OptimizeEditSettings()
    check_optimize_edit(settings, out)
    check_orthogonalizable(model.hf_model.config)
    assert out is not None
    clock = StageClock(total=4, echo=echo)
    clock.stage("setup", "direction run, candidates, prompts")
    stored = ensure_direction(model, settings.direction_run, echo=echo)
    for line in direction_mismatches(stored, model):
        logger.warning("%s", line)
    run_dir = Path(settings.direction_run)
    candidates = CandidateDirections.load(run_dir / "candidates")
    position_index = candidates.positions.index(stored.position)
    tokens_file = run_dir / "refusal_tokens.json"
    if not tokens_file.is_file():
        raise MechrefError(f"{run_dir} has no refusal_tokens.json; run the refusal-direction analysis there first")
    tokens = [int(t) for t in read_json(tokens_file)["token_ids"]]
    prompts = _prompts(settings)
    run = Run(out, resume=settings.resume)
    base = {
        **model.identity(),
        "direction": fingerprint(stored.direction.tolist()),
        "candidates": fingerprint(candidates.directions[position_index].sum(-1).tolist()),
        "tokens": tokens,
        "prompts": fingerprint(prompts),
    }
    layers = layer_range(model.n_layers, settings.layer_low, settings.layer_high, stored.layer)
    reference_logits = last_token_logits(model, prompts["search_harmless"], batch_size=settings.batch_size, progress=False)

    clock.stage("search", f"up to {settings.n_trials} trials or {settings.timeout_minutes:g} min")
    study_key = {**base, "seed": settings.seed, "layers": layers, "n_search": settings.n_search}
    storage = f"sqlite:///{Path(out).resolve() / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=f"mechref-{fingerprint(study_key)}",  # other settings: another study, never mixed
        storage=storage,
        load_if_exists=settings.resume,
        directions=["minimize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=settings.seed, multivariate=True),
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        study.enqueue_trial(reference_params(stored.layer, model.n_layers))

    def objective(trial) -> tuple[float, float]:
        point = suggest(trial, model.n_layers, layers)
        values = score_edit(
            model,
            point.direction(candidates.directions, position_index),
            point,
            prompts["search_harmful"],
            prompts["search_harmless"],
            tokens,
            reference_logits,
            settings.batch_size,
        )
        trial.set_user_attr("refusing_share", values["refusing_share"])
        return values["refusal_score"], values["kl"]

    remaining = max(0, settings.n_trials - len(done))
    started = time.perf_counter()
    if remaining:
        bar = tqdm(total=remaining, desc="search", unit="trial", disable=not echo)

        def progress(study, trial) -> None:
            front = study.best_trials
            best = min(front, key=lambda t: t.values[0])
            bar.set_postfix_str(f"front {len(front)}, best refusal score {best.values[0]:+.2f} at KL {best.values[1]:.3f}")
            bar.update(1)

        study.optimize(objective, n_trials=remaining, timeout=settings.timeout_minutes * 60, callbacks=[progress])
        bar.close()
    search_seconds = time.perf_counter() - started + float(study.user_attrs.get("seconds", 0.0))
    study.set_user_attr("seconds", search_seconds)
    front_numbers = {t.number for t in study.best_trials}
    trials = [
        {
            "number": t.number,
            "params": t.params,
            "point": point_from_params(t.params).to_dict(),
            "refusal_score": t.values[0],
            "refusing_share": t.user_attrs.get("refusing_share"),
            "kl": t.values[1],
            "pareto": t.number in front_numbers,
        }
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ]
    reference = trials[0]
    clock.note(
        f"{len(trials)} trials in {search_seconds:.0f} s; front of {len(front_numbers)}; reference edit: refusal score "
        f"{reference['refusal_score']:+.2f}, KL {reference['kl']:.4f}"
    )

    clock.stage("confirm", "the reference and the chosen points, by generation on held-out prompts")
    chosen = [("reference (today's edit)", reference), *choose_points(trials, reference, settings.n_confirm_points)]
    harmless_reference = last_token_logits(model, prompts["confirm_harmless"], batch_size=settings.batch_size, progress=False)

    def confirm() -> list[dict]:
        rows = [
            {
                "label": "unedited",
                "trial": None,
                "point": None,
                "replies": generate(
                    model,
                    prompts["confirm_harmful"],
                    max_new_tokens=settings.max_new_tokens,
                    batch_size=settings.batch_size,
                    progress=echo,
                ),
                "kl": [0.0] * len(prompts["confirm_harmless"]),
            },
        ]
        for label, trial in chosen:
            point = point_from_params(trial["params"])
            direction = point.direction(candidates.directions, position_index)
            with weighted_ablation(model, direction, point.strengths(model.n_layers)):
                replies = generate(
                    model,
                    prompts["confirm_harmful"],
                    max_new_tokens=settings.max_new_tokens,
                    batch_size=settings.batch_size,
                    progress=echo,
                )
                logits = last_token_logits(model, prompts["confirm_harmless"], batch_size=settings.batch_size, progress=False)
            kl = kl_divergence(harmless_reference, logits)
            rows.append(
                {
                    "label": label,
                    "trial": trial["number"],
                    "point": trial["point"],
                    "replies": replies,
                    "kl": [float(x) for x in kl],
                }
            )
        return rows

    confirm_settings = {
        **base,
        "trials": [t["number"] for _, t in chosen],
        "params": [t["params"] for _, t in chosen],
        "n_confirm": settings.n_confirm,
        "max_new_tokens": settings.max_new_tokens,
    }
    confirmed = run.stage(
        "confirm",
        confirm_settings,
        confirm,
        save=lambda v, d: write_json(d / "confirm.json", v),
        load=lambda d: read_json(d / "confirm.json"),
    )
    judge = make_judge(settings.judge)
    for row in confirmed:
        row["refusals"] = judge.judge_many(row["replies"])
        k = sum(row["refusals"])
        clock.note(f"{row['label']:28s} refusal {k}/{len(row['replies'])}   mean KL {sum(row['kl']) / len(row['kl']):.4f}")

    clock.stage("export", "the first confirmed point of the front" if settings.export_model else "nothing to export")
    exported = None
    if settings.export_model is not None and len(chosen) > 1:
        label, trial = chosen[1]
        point = point_from_params(trial["params"])
        exported = str(
            export_orthogonalized(
                model,
                point.direction(candidates.directions, position_index),
                settings.export_model,
                strengths=point.strengths(model.n_layers),
                overwrite=settings.overwrite,
                provenance={"search_trial": trial["number"], "search_point": label, **trial["point"]},
            )
        )
    timings = dict(clock.timings)
    clock.finish()
    return OptimizeEditResult(
        settings=settings,
        model=model.identity(),
        reference_layer=stored.layer,
        position=stored.position,
        refusal_tokens=tokens,
        prompts={k: len(v) for k, v in prompts.items()},
        trials=trials,
        confirmed=confirmed,
        search_seconds=search_seconds,
        exported_model=exported,
        resumed_stages=list(run.resumed),
        timings={**timings, **clock.timings},
    )
