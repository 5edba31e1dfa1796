"""The refusal-direction analysis (Arditi et al. 2024) as one library call.

:func:`run_refusal_direction` finds the refusal direction of a chat model (difference-in-means
candidates over post-instruction positions and layers, selected by bypass / induce / KL scores),
evaluates it (ablating it removes refusal, adding it induces refusal) and optionally exports the
orthogonalized model. :func:`mechref.analyses.refusal_direction.report.report_refusal_direction` draws the figures
and writes ``summary.json`` and ``index.html``. With an ``out`` folder every stage is saved there
and a later call with the same inputs resumes from it.

Example (the embedded model; a few minutes on a CPU)::

    from mechref import load_model
    from mechref.analyses.refusal_direction import RefusalDirectionSettings, run_refusal_direction, report_refusal_direction

    model = load_model(dtype="bfloat16")
    result = run_refusal_direction(model, RefusalDirectionSettings(n_test=10), out="runs/refusal_direction")
    print(result.layer, result.rates["harmful_ablation"])
    report_refusal_direction(result, "runs/refusal_direction")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from mechref.analyses.refusal_direction.evaluation import CONDITIONS, evaluate_condition
from mechref.analyses.refusal_direction.selection import SelectionResult, select_direction
from mechref.analyses.refusal_direction.settings import RefusalDirectionSettings
from mechref.data import PromptSet, bundled, load_prompt_file, load_refusal_direction_splits
from mechref.data.prompts import LABELS, SPLITS
from mechref.directions.candidates import CandidateDirections, extract_candidates
from mechref.edits.orthogonalize import export_orthogonalized
from mechref.framework.checks import check_token_ids
from mechref.framework.clock import StageClock
from mechref.framework.io import read_json, read_jsonl, write_json, write_jsonl
from mechref.framework.ownership import check_export_target, check_output_folder
from mechref.framework.runs import Run
from mechref.judges.core import make_judge
from mechref.model.fit import check_prompt_lengths
from mechref.model.loading import MechrefModel
from mechref.rates import Rate
from mechref.scoring import RefusalTokens, derive_refusal_tokens, filter_by_refusal_score


@dataclass
class RefusalDirectionResult:
    """Everything the analysis found; :func:`~mechref.analyses.refusal_direction.report.report_refusal_direction` draws it."""

    settings: RefusalDirectionSettings
    model: dict  # MechrefModel.identity()
    n_layers: int
    post_instruction_tokens: list[str]
    prompt_sets: dict[str, PromptSet]  # "harmful_train", ... after sampling and filtering
    refusal_tokens: RefusalTokens
    candidates: CandidateDirections
    selection: SelectionResult
    evaluation: dict[str, list[dict]] = field(default_factory=dict)  # condition -> judged completions
    exported_model: Path | None = None
    resumed_stages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def direction(self) -> Float[Tensor, " d_model"]:
        """The selected direction (unit norm)."""
        return self.selection.direction

    @property
    def layer(self) -> int:
        """The layer the direction was taken at."""
        return self.selection.layer

    @property
    def position(self) -> int:
        """The post-instruction position it was taken at (negative, from the end)."""
        return self.selection.position

    @property
    def rates(self) -> dict[str, Rate]:
        """Refusal rate of each evaluated condition, with its counts."""
        return {c: Rate.of(r["refusal"] for r in rows) for c, rows in self.evaluation.items()}

    @property
    def mean_refusal_scores(self) -> dict[str, float]:
        """Mean logit refusal score of each evaluated condition."""
        return {c: sum(r["refusal_score"] for r in rows) / len(rows) for c, rows in self.evaluation.items()}


def _condition_rows(*args: Any, **kwargs: Any) -> list[dict]:
    return evaluate_condition(*args, **kwargs).rows()


def _write_rows(rows: list[dict], folder: Path, name: str) -> Path:
    return write_jsonl(folder / name, rows)


def _read_rows(folder: Path, name: str) -> list[dict]:
    return read_jsonl(folder / name)


def load_prompt_sets(settings: RefusalDirectionSettings) -> dict[str, PromptSet]:
    """Train/val/test prompt sets (bundled unless files are given), sampled as the paper."""
    splits = load_refusal_direction_splits(settings.splits) if settings.splits else None
    sets: dict[str, PromptSet] = {}
    for label in LABELS:
        for split in SPLITS:
            path = getattr(settings, f"{label}_{split}")
            if path:
                sets[f"{label}_{split}"] = load_prompt_file(path, label, split)
            elif splits:
                sets[f"{label}_{split}"] = splits[(label, split)]
            else:
                sets[f"{label}_{split}"] = bundled(label, split)
    for label in LABELS:
        sets[f"{label}_train"] = sets[f"{label}_train"].sample(settings.n_train, settings.seed)
        sets[f"{label}_val"] = sets[f"{label}_val"].sample(min(settings.n_val, len(sets[f"{label}_val"])), settings.seed)
        if settings.n_test:
            sets[f"{label}_test"] = sets[f"{label}_test"].take(settings.n_test)
    return sets


def check_refusal_direction(settings: RefusalDirectionSettings, out: str | Path | None = None) -> None:
    """Every check that needs no model: prompt files, the output folder, the export target."""
    load_prompt_sets(settings)
    if out is not None:
        check_output_folder(out)
    if settings.export_model is not None:
        check_export_target(settings.export_model, settings.overwrite)


def check_refusal_direction_fit(model: MechrefModel, settings: RefusalDirectionSettings) -> None:
    """The checks that need the model: refusal token ids and prompt lengths."""
    if settings.refusal_tokens:
        check_token_ids(settings.refusal_tokens, model.d_vocab)
    sets = load_prompt_sets(settings)
    for name, prompts in sets.items():
        extra = settings.max_new_tokens if name.endswith("_test") and not settings.skip_eval else 0
        check_prompt_lengths(model, prompts.instructions, extra, what=f"{name} prompt")


def run_refusal_direction(
    model: MechrefModel, settings: RefusalDirectionSettings | None = None, out: str | Path | None = None, *, echo: bool = True
) -> RefusalDirectionResult:
    """Find, select, evaluate and (optionally) export the refusal direction of ``model``.

    ``out``: a folder for the stages' artifacts (resumed when their inputs match); None keeps
    everything in memory. ``echo`` prints the stages as they run.
    """
    settings = settings or RefusalDirectionSettings()
    check_refusal_direction(settings, out)
    check_refusal_direction_fit(model, settings)
    clock = StageClock(total=5 + bool(settings.export_model), echo=echo)
    sets = load_prompt_sets(settings)
    run = Run(out, resume=settings.resume)
    base = model.identity()
    fp = {key: p.fingerprint() for key, p in sets.items()}

    clock.stage("refusal_tokens", "refusal tokens")
    if settings.refusal_tokens:
        ids = list(settings.refusal_tokens)
        tokens = RefusalTokens(ids, [model.decode(t) for t in ids], [0] * len(ids), 0, 0)
    else:
        tokens = run.stage(
            "refusal_tokens",
            {**base, "harmful_train": fp["harmful_train"], "harmless_train": fp["harmless_train"]},
            # Replies to harmless prompts too: a token that opens them is left out (a topic, not a refusal).
            lambda: derive_refusal_tokens(
                model,
                sets["harmful_train"].take(32),
                harmless_prompts=sets["harmless_train"].take(32),
                batch_size=settings.batch_size,
            ),
            save=lambda v, d: write_json(d / "refusal_tokens.json", v.to_dict()),
            load=lambda d: RefusalTokens(**read_json(d / "refusal_tokens.json")),
        )
    clock.note(f"refusal tokens {tokens.tokens} (ids {tokens.token_ids})")

    clock.stage("filter", "filtering train/val prompts by refusal score" if settings.filter else "no filter")
    if settings.filter:

        def do_filter() -> dict[str, list[str]]:
            kept = {}
            for split in ("train", "val"):
                pair = filter_by_refusal_score(
                    model, sets[f"harmful_{split}"], sets[f"harmless_{split}"], tokens.token_ids, batch_size=settings.batch_size
                )
                kept[f"harmful_{split}"], kept[f"harmless_{split}"] = pair[0].instructions, pair[1].instructions
            return kept

        filtered = run.stage(
            "filter",
            {**base, **fp, "tokens": tokens.token_ids},
            do_filter,
            save=lambda v, d: write_json(d / "filtered_prompts.json", v),
            load=lambda d: read_json(d / "filtered_prompts.json"),
        )
        for key, instructions in filtered.items():
            before = sets[key]
            sets[key] = PromptSet(instructions, before.label, before.split, source=before.source)
            clock.note(f"{key}: kept {len(instructions)} of {len(before)}")
    fp = {key: p.fingerprint() for key, p in sets.items()}

    clock.stage("extraction", "extracting difference-in-means candidates")
    candidates = run.stage(
        "candidates",
        {**base, "harmful_train": fp["harmful_train"], "harmless_train": fp["harmless_train"]},
        lambda: extract_candidates(model, sets["harmful_train"], sets["harmless_train"], batch_size=settings.batch_size),
        save=lambda v, d: v.save(d / "candidates"),
        load=lambda d: CandidateDirections.load(d / "candidates"),
    )

    clock.stage("selection", "selecting the direction")
    selection_settings = settings.selection_settings()
    selection = run.stage(
        "selection",
        {**base, **fp, "tokens": tokens.token_ids, "selection": asdict(selection_settings)},
        lambda: select_direction(
            model, candidates, sets["harmful_val"], sets["harmless_val"], tokens.token_ids, selection_settings
        ),
        save=lambda v, d: v.save(d, base),
        load=SelectionResult.load,
    )
    chosen = selection.chosen
    if selection.fallback is not None:
        clock.note(f"note: {selection.fallback}")
    clock.note(
        f"chosen layer {selection.layer}, position {selection.position} "
        f"({model.chat.post_instruction_tokens[selection.position]!r}): bypass {chosen.bypass:.3f}, "
        f"induce {chosen.induce:.3f}, KL {chosen.kl:.4f}; {selection.n_forward_passes} forward passes "
        f"({selection.n_prompt_passes} prompt passes)"
    )

    evaluation: dict[str, list[dict]] = {}
    clock.stage("evaluation", "evaluating on test prompts" if not settings.skip_eval else "evaluation skipped")
    if not settings.skip_eval:
        judge = make_judge(settings.judge, model)
        for condition in CONDITIONS:
            prompts = sets[f"{condition.split('_')[0]}_test"]
            stage_settings = {
                **base,
                "prompts": prompts.fingerprint(),
                "layer": selection.layer,
                "position": selection.position,
                "direction_norm": float(selection.direction.norm()),
                "max_new_tokens": settings.max_new_tokens,
                # In bfloat16 a reply can change with the rows decoded beside it (padding, kernels).
                "generation_batch_size": settings.generation_batch_size,
                "judge": settings.judge,
                "tokens": tokens.token_ids,
            }
            rows = run.stage(
                f"eval_{condition}",
                stage_settings,
                partial(
                    _condition_rows,
                    model,
                    condition,
                    prompts,
                    selection.direction,
                    selection.layer,
                    judge=judge,
                    refusal_tokens=tokens.token_ids,
                    max_new_tokens=settings.max_new_tokens,
                    batch_size=settings.batch_size,
                    generation_batch_size=settings.generation_batch_size,
                ),
                save=partial(_write_rows, name=f"completions_{condition}.jsonl"),
                load=partial(_read_rows, name=f"completions_{condition}.jsonl"),
            )
            evaluation[condition] = rows
            rate = Rate.of(r["refusal"] for r in rows)
            score = sum(r["refusal_score"] for r in rows) / len(rows)
            clock.note(f"{condition:18s} refusal rate {rate}   mean refusal score {score:+.2f}")

    exported = None
    if settings.export_model:
        clock.stage("export", f"exporting the orthogonalized model to {settings.export_model}")
        provenance = {
            "layer": selection.layer,
            "position": selection.position,
            "bypass_score": chosen.bypass,
            "induce_score": chosen.induce,
            "kl": chosen.kl,
            "n_train": settings.n_train,
            "harmful_train": sets["harmful_train"].source,
            "harmless_train": sets["harmless_train"].source,
        }
        exported = export_orthogonalized(
            model, selection.direction, settings.export_model, provenance=provenance, overwrite=settings.overwrite
        )
    clock.finish()
    return RefusalDirectionResult(
        settings=settings,
        model=base,
        n_layers=model.n_layers,
        post_instruction_tokens=list(model.chat.post_instruction_tokens),
        prompt_sets=sets,
        refusal_tokens=tokens,
        candidates=candidates,
        selection=selection,
        evaluation=evaluation,
        exported_model=exported,
        resumed_stages=list(run.resumed),
        timings=clock.timings,
    )
