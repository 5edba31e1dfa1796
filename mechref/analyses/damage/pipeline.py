"""The damage analysis as one library call: :func:`run_damage`.

Conditions: ``original`` (the loaded model, unedited), each hook edit of a refusal direction
(``ablation``, ``actadd``) and ``exported`` (a weight-edited model folder loaded beside it). Every
condition answers the same prompts, so each change is paired:

* **over-refusal**: refusal of XSTest's safe prompts (k/n, 95% interval, exact McNemar test
  against ``original``); degenerate replies are counted apart;
* **KL and cross-entropy** on the unedited model's own greedy replies to harmless prompts
  (:mod:`mechref.analyses.damage.divergence`), with 95% intervals over prompts;
* **GSM8K**: exact match of the final number on the first N problems.

>>> import torch
>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> settings = DamageSettings(n_harmless=2, reference_tokens=3, kl_tokens=2, batch_size=2)
>>> result = run_damage(model, settings, direction=(torch.ones(model.d_model), 1), echo=False)
>>> result.conditions, sorted(result.divergence)
(['original', 'ablation', 'actadd'], ['ablation', 'actadd', 'original'])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from jaxtyping import Float
from torch import Tensor

from mechref.analyses.damage.data import GSM8K_INSTRUCTION, read_gsm8k, read_xstest_safe, reply_final_number
from mechref.analyses.damage.divergence import Condition, Divergence, divergences, reply_sequences
from mechref.analyses.damage.settings import DamageSettings
from mechref.data import bundled, load_prompt_file
from mechref.errors import DataFormatError
from mechref.framework.clock import StageClock
from mechref.framework.io import fingerprint, read_json, read_jsonl, sha256_file, write_json, write_jsonl
from mechref.framework.ownership import check_output_folder
from mechref.framework.runs import Run
from mechref.generation import generate, generate_ids
from mechref.interventions import intervene
from mechref.judges.core import make_judge
from mechref.judges.degenerate import reply_category
from mechref.model.fit import check_prompt_lengths
from mechref.model.loading import MechrefModel
from mechref.model.plain import load_sharing
from mechref.model.swap import WeightSwap
from mechref.row_interventions import HookEdit, generate_ids_per_edit


@dataclass
class DamageResult:
    settings: DamageSettings
    model: dict  # MechrefModel.identity() of the unedited model
    conditions: list[str]
    edits: dict[str, dict]  # condition -> what it is (direction, layer, coefficient, folder)
    over_refusal: dict[str, list[dict]] = field(default_factory=dict)  # condition -> one row per XSTest prompt
    gsm8k: dict[str, list[dict]] = field(default_factory=dict)  # condition -> one row per problem
    divergence: dict[str, Divergence] = field(default_factory=dict)
    reference_replies: list[dict] = field(default_factory=list)  # the unedited model's harmless replies
    warnings: list[str] = field(default_factory=list)
    resumed_stages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def check_damage(settings: DamageSettings, out: str | Path | None = None) -> None:
    """Every check that needs no model: something to measure, readable files, a free output folder."""
    if settings.direction is None and settings.edited is None:
        raise DataFormatError(
            "nothing to measure: give --direction (a refusal direction, for the ablation and actadd edits) "
            "and/or --edited (a weight-edited model folder)"
        )
    if settings.direction is not None and not settings.edits and settings.edited is None:
        raise DataFormatError("--edits is empty and no --edited folder is given: name at least one edit")
    if settings.direction is not None:
        from mechref.directions.store import load_direction

        load_direction(settings.direction)
    if settings.edited is not None and not (Path(settings.edited) / "config.json").is_file():
        raise DataFormatError(
            f"{settings.edited} is not a Hugging Face model folder (no config.json); give the --edited export folder"
        )
    if settings.xstest is not None:
        read_xstest_safe(settings.xstest, settings.n_xstest)
    if settings.gsm8k is not None:
        read_gsm8k(settings.gsm8k, settings.n_gsm8k)
    harmless_prompts(settings)
    if out is not None:
        check_output_folder(out)


def check_damage_fit(model: MechrefModel, settings: DamageSettings) -> None:
    """The checks that need the model, before the first forward pass: every prompt, with the tokens
    it will be given, fits the model's context."""
    check_prompt_lengths(model, harmless_prompts(settings), settings.reference_tokens, what="harmless prompt")
    if settings.xstest is not None:
        safe = [p.prompt for p in read_xstest_safe(settings.xstest, settings.n_xstest)]
        check_prompt_lengths(model, safe, settings.max_new_tokens, what="XSTest prompt")
    if settings.gsm8k is not None:
        problems = [GSM8K_INSTRUCTION.format(question=p.question) for p in read_gsm8k(settings.gsm8k, settings.n_gsm8k)]
        check_prompt_lengths(model, problems, settings.gsm8k_max_new_tokens, what="GSM8K problem")


def harmless_prompts(settings: DamageSettings) -> list[str]:
    """The prompts whose replies KL and cross-entropy are measured on."""
    if settings.harmless is not None:
        return load_prompt_file(settings.harmless, "harmless", "test").take(settings.n_harmless).instructions
    return bundled("harmless", "test").take(settings.n_harmless).instructions


def check_same_tokenizer(model: MechrefModel, folder: str | Path) -> None:
    """The weight-edited model in ``folder`` reads ``model``'s tokens (its chat template too): an edit of it
    (the vocabulary's size is the config's, compared where the model is loaded or swapped in)."""
    from transformers import AutoTokenizer

    probe = model.chat.format("How do I bake bread?")
    theirs = AutoTokenizer.from_pretrained(str(folder))
    if model.tokenizer(probe)["input_ids"] != theirs(probe)["input_ids"]:
        raise DataFormatError(
            f"the model in {folder} does not share the loaded model's tokenizer and chat template: it is not an edit of "
            f"{model.name}; load the model it was exported from with --model"
        )


def load_edited(model: MechrefModel, folder: str | Path) -> MechrefModel:
    """The weight-edited model, loaded like ``model`` (dtype, device, system prompt); its tokenizer must match.
    Every tensor the edit left alone is ``model``'s own (:func:`~mechref.model.plain.load_sharing`):
    the two models cost the memory of one and the edited tensors. (:func:`run_damage` runs an edit
    of ``model`` as ``model`` with the edited tensors swapped in, :func:`exported_condition`, and
    loads it beside only where it cannot.)"""
    check_same_tokenizer(model, folder)
    return _load_beside(model, folder)


def _load_beside(model: MechrefModel, folder: str | Path) -> MechrefModel:
    edited = load_sharing(folder, model)
    if model.d_vocab != edited.d_vocab:
        raise DataFormatError(
            f"the model in {folder} has {edited.d_vocab} tokens, the loaded model {model.d_vocab}: it is not an edit of "
            f"{model.name}; load the model it was exported from with --model"
        )
    return edited


def exported_condition(model: MechrefModel, folder: str | Path, echo: bool = True) -> Condition:
    """The weight-edited model in ``folder`` as a condition: ``model`` with the folder's differing tensors
    swapped in while it runs (:class:`~mechref.model.swap.WeightSwap`: one version of them in memory), or,
    where the folder cannot be swapped in (another config, tensors the bridge derives, a GPU), the folder
    loaded beside ``model`` (:func:`load_edited`)."""
    check_same_tokenizer(model, folder)
    swap = WeightSwap.plan(model, folder)
    if swap is None:
        return Condition(_load_beside(model, folder))
    if echo:
        print(
            f"  {len(swap.names)} of its tensors differ from the loaded model's: they take their place while "
            "the exported model runs (one version in memory)",
            flush=True,
        )
    return Condition(model, swap.applied)


def run_damage(
    model: MechrefModel,
    settings: DamageSettings | None = None,
    out: str | Path | None = None,
    *,
    direction: tuple[Float[Tensor, " d_model"], int] | None = None,
    edited: MechrefModel | None = None,
    echo: bool = True,
) -> DamageResult:
    """Measure what each edit breaks, against ``model`` unedited.

    The direction comes from ``settings.direction`` or, in Python, ``direction=(vector, layer)``;
    the weight-edited model from ``settings.edited`` or ``edited=`` (an already loaded model).
    """
    settings = settings or DamageSettings()
    if direction is None and edited is None:
        check_damage(settings, out)
    elif out is not None:
        check_output_folder(out)
    check_damage_fit(model, settings)
    warnings: list[str] = []
    edits: dict[str, dict] = {}
    vector_fp = None
    if direction is None and settings.direction is not None:
        from mechref.directions.store import direction_mismatches, load_direction

        stored = load_direction(settings.direction)
        warnings += direction_mismatches(stored, model)
        direction = (stored.direction, stored.layer)
        source = str(stored.path)
    else:
        source = "given in Python"
    conditions: dict[str, Condition] = {"original": Condition(model)}
    # The conditions that are hooks on the loaded model: their replies are decoded in one batch.
    hook_edits: dict[str, HookEdit] = {"original": HookEdit("baseline")}
    vector = None
    if direction is not None:
        vector, layer = direction
        vector_fp = fingerprint(vector.double().tolist())
        for edit in settings.edits:
            if edit == "ablation":
                conditions[edit] = Condition(model, partial(intervene, model, "ablation", vector))
                hook_edits[edit] = HookEdit("ablation")
                edits[edit] = {"edit": "directional ablation at every layer", "direction": source}
            else:
                coefficient = settings.actadd_coefficient
                conditions[edit] = Condition(model, partial(intervene, model, "addition", vector, layer, coefficient))
                hook_edits[edit] = HookEdit("addition", coefficient, layer)
                edits[edit] = {"edit": f"activation addition x{coefficient:+g} at layer {layer}", "direction": source}
    edited_fp = None
    exported: Condition | None = None
    folder: Path | None = None
    if edited is None and settings.edited is not None:
        if echo:
            print(f"reading the edited model {settings.edited} …", flush=True)
        exported, folder = exported_condition(model, settings.edited, echo), Path(settings.edited)
    elif edited is not None:
        exported, folder = Condition(edited), Path(edited.folder) if edited.folder else None
    if exported is not None:
        conditions["exported"] = exported
        edited_fp = _folder_fingerprint(folder) if folder else fingerprint(exported.model.identity())
        info_path = folder / "mechref_edit.json" if folder else None
        edits["exported"] = {
            "edit": "weight-edited model",
            "folder": str(folder) if folder else None,
            **({"provenance": read_json(info_path)} if info_path and info_path.is_file() else {}),
        }
    for line in warnings:
        print(f"warning: {line}", flush=True)

    measures = settings.measures()
    clock = StageClock(total=len(measures), echo=echo)
    run = Run(out, resume=settings.resume)
    base = {**model.identity(), "direction": vector_fp, "edited": edited_fp}
    result = DamageResult(settings, model.identity(), list(conditions), edits, warnings=warnings)
    options: dict[str, Any] = {"batch_size": settings.batch_size, "progress": echo}
    generation: dict[str, Any] = {"batch_size": settings.generation_batch_size, "progress": echo}

    clock.stage("kl_ce", "KL and cross-entropy on the unedited model's own harmless replies")
    prompts = harmless_prompts(settings)
    reference = run.stage(
        "reference_replies",
        {**model.identity(), "prompts": fingerprint(prompts), "tokens": settings.reference_tokens},
        lambda: [
            {"prompt": p, "reply_ids": ids, "reply": model.decode(ids, skip_special_tokens=True)}
            for p, ids in zip(prompts, generate_ids(model, prompts, max_new_tokens=settings.reference_tokens, **options))
        ],
        save=lambda v, d: write_jsonl(d / "reference_replies.jsonl", v),
        load=lambda d: read_jsonl(d / "reference_replies.jsonl"),
    )
    result.reference_replies = reference
    found = run.stage(
        "divergence",
        {**base, "conditions": edits, "reference": fingerprint(reference), "kl_tokens": settings.kl_tokens},
        lambda: {
            name: asdict(d)
            for name, d in divergences(
                conditions,
                reply_sequences(model, [r["prompt"] for r in reference], [r["reply_ids"] for r in reference]),
                [len(r["reply_ids"]) for r in reference],
                kl_tokens=settings.kl_tokens,
                reference="original",
                # Full-vocabulary log-probabilities of every reply position: a quarter of the batch at a time.
                batch_size=max(1, settings.batch_size // 4),
                progress=echo,
            ).items()
        },
        save=lambda v, d: write_json(d / "divergence.json", v),
        load=lambda d: read_json(d / "divergence.json"),
    )
    result.divergence = {name: Divergence(**values) for name, values in found.items()}

    together = [name for name in conditions if name in hook_edits] if vector is not None else []
    measured = {"xstest": list(conditions), "gsm8k": settings.gsm8k_names(list(conditions))}
    decoded: dict[str, dict[str, list[str]]] = {}  # measure -> condition -> replies of the hook conditions

    def replies(measure: str, name: str, prompts: list[str], tokens: int) -> list[str]:
        """The replies of condition ``name``; the hook conditions' are decoded together, once."""
        if name not in together:
            with conditions[name].context():
                return generate(conditions[name].model, prompts, max_new_tokens=tokens, **generation)
        if measure not in decoded:
            assert vector is not None  # `together` is empty without a direction
            wanted = {n: hook_edits[n] for n in together if n in measured[measure]}
            ids = generate_ids_per_edit(model, prompts, vector, wanted, max_new_tokens=tokens, **generation)
            decoded[measure] = {n: [model.decode(row, skip_special_tokens=True) for row in rows] for n, rows in ids.items()}
        return decoded[measure][name]

    def per_condition(
        measure: str, inputs: list, compute, tokens: int, extra: dict, names: list[str] | None = None
    ) -> dict[str, list[dict]]:
        """One resumable stage per condition (of ``names``, default all): ``compute(inputs, reply)`` -> rows,
        ``reply(prompts)`` -> replies."""
        found = {}
        for name in names if names is not None else list(conditions):
            found[name] = run.stage(
                f"{measure}_{name}",
                {
                    **base,
                    "condition": edits.get(name),
                    "inputs": fingerprint([asdict(x) for x in inputs]),
                    "max_new_tokens": tokens,
                    # In bfloat16 a reply can change with the rows decoded beside it.
                    "decoded_with": [n for n in together if n in measured[measure]] if name in together else [name],
                    "generation_batch_size": settings.generation_batch_size,
                    **extra,
                },
                partial(compute, inputs, lambda prompts, name=name: replies(measure, name, prompts, tokens)),
                save=partial(_write_rows, name=f"{measure}_{name}.jsonl"),
                load=partial(_read_rows, name=f"{measure}_{name}.jsonl"),
            )
        return found

    if settings.xstest is not None:
        clock.stage("over_refusal", "over-refusal of XSTest's safe prompts")
        safe = read_xstest_safe(settings.xstest, settings.n_xstest)
        judge = make_judge(settings.judge, model)
        result.over_refusal = per_condition(
            "xstest", safe, partial(_xstest_rows, judge=judge), settings.max_new_tokens, {"judge": settings.judge}
        )
        for name, rows in result.over_refusal.items():
            clock.note(f"{name:10s} over-refusal {sum(r['refusal'] for r in rows)}/{len(safe)}")

    if settings.gsm8k is not None:
        clock.stage("gsm8k", "GSM8K accuracy")
        problems = read_gsm8k(settings.gsm8k, settings.n_gsm8k)
        result.gsm8k = per_condition("gsm8k", problems, _gsm8k_rows, settings.gsm8k_max_new_tokens, {}, names=measured["gsm8k"])
        for name, rows in result.gsm8k.items():
            clock.note(f"{name:10s} GSM8K {sum(r['correct'] for r in rows)}/{len(problems)} correct")
    clock.finish()
    result.timings = clock.timings
    result.resumed_stages = list(run.resumed)
    return result


def _xstest_rows(safe: list, reply: Callable[[list[str]], list[str]], *, judge) -> list[dict]:
    prompts = [p.prompt for p in safe]
    replies = reply(prompts)
    verdicts = judge.judge_many(replies, prompts=prompts)
    return [
        {"id": p.id, "type": p.type, "prompt": p.prompt, "completion": r, "refusal": bool(v), "category": reply_category(v, r)}
        for p, r, v in zip(safe, replies, verdicts)
    ]


def _gsm8k_rows(problems: list, reply: Callable[[list[str]], list[str]]) -> list[dict]:
    prompts = [GSM8K_INSTRUCTION.format(question=p.question) for p in problems]
    rows = []
    for problem, solution in zip(problems, reply(prompts)):
        predicted = reply_final_number(solution)
        rows.append(
            {
                "question": problem.question,
                "answer": problem.answer,
                "completion": solution,
                "predicted": predicted,
                "correct": predicted == problem.answer,
                "category": reply_category(False, solution),
            }
        )
    return rows


def _write_rows(rows: list[dict], folder: Path, name: str) -> Path:
    return write_jsonl(folder / name, rows)


def _read_rows(folder: Path, name: str) -> list[dict]:
    return read_jsonl(folder / name)


def _folder_fingerprint(folder: Path) -> str:
    """The weights and config of a model folder: a measurement of other weights is never resumed."""
    parts = {
        p.name: sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and (p.suffix in {".safetensors", ".bin", ".json"} or p.name.endswith(".model"))
    }
    return fingerprint(parts)
