"""The suffix-hijack analysis (Arditi et al. 2024, section 5) as one library call.

:func:`run_suffix_hijack` compares harmful instructions alone, with an adversarial (GCG) suffix,
with a random suffix of the same token length, and harmless instructions: the cosine of the last
token's residual stream with the refusal direction at every layer, the direct feature attribution
(DFA) of every head and MLP to the direction, where the top heads look from the last token, and
the greedy replies. :func:`mechref.analyses.suffix_hijack.report.report_suffix_hijack` draws it.

Example (the embedded model; the refusal direction is computed on first use)::

    from mechref import load_model
    from mechref.analyses.suffix_hijack import SuffixHijackSettings, run_suffix_hijack, report_suffix_hijack

    model = load_model(dtype="bfloat16")
    result = run_suffix_hijack(model, SuffixHijackSettings(n=4), out="runs/suffix_hijack")
    print(result.rates())
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from mechref.analyses.gcg.pipeline import GCGSettings, run_gcg
from mechref.analyses.refusal_direction.ensure import ensure_direction
from mechref.analyses.suffix_hijack.conditions import HARMFUL, Condition, build_conditions
from mechref.analyses.suffix_hijack.measure import attention_shares, full_attention, layer_cosines
from mechref.analyses.suffix_hijack.regions import token_regions
from mechref.analyses.suffix_hijack.settings import SuffixHijackSettings
from mechref.attacks.suffixes import Suffix, load_suffix_file, random_suffix, shipped_suffix, text_suffix
from mechref.attribution import direct_feature_attribution
from mechref.data import bundled, load_prompt_file
from mechref.directions.store import StoredDirection, direction_mismatches, load_direction
from mechref.framework.clock import StageClock
from mechref.framework.io import fingerprint, read_jsonl, read_tensors, write_jsonl, write_tensors
from mechref.framework.ownership import check_output_folder
from mechref.framework.runs import Run
from mechref.framework.settings import SettingsError
from mechref.framework.vectors import check_vector
from mechref.generation import generate
from mechref.judges.core import make_judge
from mechref.model.fit import check_prompt_lengths
from mechref.model.loading import MechrefModel
from mechref.rates import Rate

logger = logging.getLogger(__name__)


@dataclass
class ConditionMeasures:
    """What was measured at the last token of each prompt of one condition."""

    cosine: Float[Tensor, "n_prompt n_layer"]  # residual stream entering each layer vs the direction
    heads: Float[Tensor, "n_prompt n_layer n_head"]  # DFA of each head to the final residual stream
    mlp: Float[Tensor, "n_prompt n_layer"]
    embed: Float[Tensor, " n_prompt"]
    attn_bias: Float[Tensor, "n_prompt n_layer"]
    projection: Float[Tensor, " n_prompt"]  # the final residual stream's projection on the direction
    allowed_error: Float[Tensor, " n_prompt"]  # the completeness gap the model's dtype allows (Attribution.allowed_error)
    shares: Float[Tensor, "n_prompt n_top n_region"]  # attention of the top heads over the prompt's regions

    @property
    def completeness_error(self) -> float:
        """Largest gap between the sum of every component's DFA and the projection it decomposes."""
        total = self.embed + self.heads.sum((1, 2)) + self.attn_bias.sum(1) + self.mlp.sum(1)
        return float((total - self.projection).abs().max())

    @property
    def complete(self) -> bool:
        """Do the components sum to the projection within what the model's rounding allows, for every prompt?"""
        total = self.embed + self.heads.sum((1, 2)) + self.attn_bias.sum(1) + self.mlp.sum(1)
        return bool(((total - self.projection).abs() <= self.allowed_error).all())


@dataclass
class AttentionView:
    """Every query's attention of the top heads on one prompt, for a circuitsvis view."""

    condition: str
    instruction: str
    suffix: str
    tokens: list[str]
    patterns: Float[Tensor, "n_top seq seq"]
    regions: list[str]


@dataclass
class SuffixHijackResult:
    settings: SuffixHijackSettings
    model: dict  # MechrefModel.identity()
    n_layers: int
    direction_layer: int
    direction_position: int
    direction_source: str
    suffix: Suffix
    random_suffix: Suffix
    n_suffix_tokens: int
    conditions: list[Condition]
    measures: dict[str, ConditionMeasures]
    top_heads: list[tuple[int, int]]
    generations: list[dict]  # condition, instruction, suffix, reply, refused
    views: list[AttentionView]
    harmful_source: str
    harmless_source: str
    direction_mismatches: list[str] = field(default_factory=list)
    resumed_stages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def rates(self, rows: list[dict] | None = None) -> dict[str, Rate]:
        """Refusal rate of each condition (of ``rows``, default every generation)."""
        rows = self.generations if rows is None else rows
        return {
            c.name: Rate.of(g["refused"] for g in rows if g["condition"] == c.name)
            for c in self.conditions
            if any(g["condition"] == c.name for g in rows)
        }


def resolve_direction(model: MechrefModel, settings: SuffixHijackSettings, echo: bool = True) -> StoredDirection:
    """The refusal direction: ``settings.direction``, or the run folder (computed there if absent)."""
    stored = (
        load_direction(settings.direction) if settings.direction else ensure_direction(model, settings.direction_run, echo=echo)
    )
    # Usable, but not what a fresh run would use: said loudly, and recorded in the summary.
    for line in direction_mismatches(stored, model):
        logger.warning("%s", line)
    stored.direction = check_vector(stored.direction, model.d_model, what=f"the refusal direction in {stored.path}")
    return stored


def resolve_suffix(
    model: MechrefModel, settings: SuffixHijackSettings, harmful: list[str], out: Path | None, echo: bool = True
) -> Suffix:
    """The suffix the settings name: text given, a suffix file, a search, or the shipped suffix for the embedded
    model."""
    if settings.suffix is not None:
        return text_suffix(model, settings.suffix)
    if settings.suffix_file is not None:
        return load_suffix_file(settings.suffix_file)
    if settings.run_gcg:
        if out is None:
            raise SettingsError("run_gcg writes the suffix it finds into the output folder: give an output folder")
        search = GCGSettings(prompt=harmful[: settings.gcg_prompts], steps=settings.gcg_steps)
        if echo:
            print(
                f"searching an adversarial suffix with GCG ({settings.gcg_steps} steps, {len(search.prompts())} prompts) …",
                flush=True,
            )
        run_gcg(model, search, out / "suffix.json", progress=echo)
        return load_suffix_file(out / "suffix.json")
    return shipped_suffix(model.name)


def load_instructions(path: Path | None, label: str, n: int) -> tuple[list[str], str]:
    """The first ``n`` instructions of a prompt file (or of the bundled test set) and a label naming where they
    came from."""
    prompts = load_prompt_file(path, label, "test") if path else bundled(label, "test")  # type: ignore[arg-type]
    return prompts.take(n).instructions, (str(path) if path else f"bundled:{label}_test")


def _measure(
    model: MechrefModel, conditions: list[Condition], direction: Tensor, settings: SuffixHijackSettings, clock: StageClock
) -> dict[str, Tensor]:
    """Cosine per layer and DFA of every component for each condition, then the top heads' attention."""
    out = {}
    for i, condition in enumerate(conditions, start=1):
        clock.note(f"measuring {condition.name} ({i}/{len(conditions)})")
        out[f"cosine/{condition.name}"] = layer_cosines(model, condition.prompts, direction, batch_size=settings.batch_size)
        attribution = direct_feature_attribution(model, condition.prompts, direction, layer=None, batch_size=settings.batch_size)
        out[f"heads/{condition.name}"] = attribution.heads
        out[f"mlp/{condition.name}"] = attribution.mlp
        out[f"embed/{condition.name}"] = attribution.embed
        out[f"attn_bias/{condition.name}"] = attribution.attn_bias
        out[f"projection/{condition.name}"] = attribution.projection
        out[f"allowed_error/{condition.name}"] = attribution.allowed_error
    plain = out[f"heads/{HARMFUL}"].mean(0)
    k = min(settings.top_k, plain.numel())
    flat = plain.flatten().topk(k).indices
    out["top_heads"] = torch.stack([flat // plain.shape[1], flat % plain.shape[1]], dim=1)
    heads = [(int(a), int(b)) for a, b in out["top_heads"]]
    for condition in conditions:
        clock.note(f"attention of the top {k} heads on {condition.name}")
        out[f"shares/{condition.name}"] = attention_shares(
            model, condition.instructions, condition.suffix, heads, batch_size=settings.batch_size
        )
    return out


def check_suffix_hijack(settings: SuffixHijackSettings, out: str | Path | None = None) -> None:
    """Every check that needs no model: prompt, suffix and direction files, the output folders."""
    load_instructions(settings.harmful, "harmful", settings.n)
    load_instructions(settings.harmless, "harmless", settings.n)
    if settings.suffix_file is not None:
        load_suffix_file(settings.suffix_file)
    if settings.direction is not None:
        load_direction(settings.direction)
    else:
        check_output_folder(settings.direction_run)
    if settings.run_gcg and out is None:
        raise SettingsError("run_gcg writes the suffix it finds into the output folder: give an output folder")
    if out is not None:
        check_output_folder(out)


def check_suffix_hijack_fit(model: MechrefModel, settings: SuffixHijackSettings) -> None:
    """The checks that need the model: the direction's width and the prompts' lengths with a suffix."""
    if settings.direction is not None:
        check_vector(load_direction(settings.direction).direction, model.d_model, what=f"direction in {settings.direction}")
    suffix_tokens = 64  # room for any suffix mechref writes (GCG's default is 20 tokens)
    if settings.suffix is not None:
        suffix_tokens = len(model.tokenizer(settings.suffix, add_special_tokens=False)["input_ids"])
    for label, path in (("harmful", settings.harmful), ("harmless", settings.harmless)):
        instructions, _ = load_instructions(path, label, settings.n)
        check_prompt_lengths(model, instructions, suffix_tokens + settings.max_new_tokens, what=f"{label} prompt")


def run_suffix_hijack(
    model: MechrefModel, settings: SuffixHijackSettings | None = None, out: str | Path | None = None, *, echo: bool = True
) -> SuffixHijackResult:
    """Measure how the suffix moves the refusal direction and the attention of the heads that write it."""
    settings = settings or SuffixHijackSettings()
    out = Path(out) if out is not None else None
    check_suffix_hijack(settings, out)
    check_suffix_hijack_fit(model, settings)
    clock = StageClock(total=4, echo=echo)
    harmful, harmful_source = load_instructions(settings.harmful, "harmful", settings.n)
    harmless, harmless_source = load_instructions(settings.harmless, "harmless", settings.n)

    clock.stage("inputs", "refusal direction and suffixes")
    stored = resolve_direction(model, settings, echo)
    suffix = resolve_suffix(model, settings, harmful, out, echo)
    n_suffix_tokens = len(model.tokenizer(suffix.text, add_special_tokens=False)["input_ids"])
    control = random_suffix(model, n_suffix_tokens, seed=settings.random_seed)
    conditions = build_conditions(harmful, harmless, suffix.text, control.text)
    clock.note(f"direction: layer {stored.layer}, position {stored.position} ({stored.path})")
    clock.note(f"adversarial suffix ({n_suffix_tokens} tokens, {suffix.source}): {suffix.text!r}")
    clock.note(f"random suffix: {control.text!r}")
    clock.note(f"{len(harmful)} harmful ({harmful_source}), {len(harmless)} harmless ({harmless_source}) instructions")

    run = Run(out, resume=settings.resume)
    base = {
        **model.identity(),
        "direction": fingerprint(stored.direction.tolist()),
        "layer": stored.layer,
        "suffix": suffix.text,
        "random_suffix": control.text,
        "harmful": fingerprint(harmful),
        "harmless": fingerprint(harmless),
    }

    clock.stage("measures", "cosines, attribution and attention per condition")
    measures = run.stage(
        "measures",
        {**base, "top_k": settings.top_k},
        lambda: _measure(model, conditions, stored.direction, settings, clock),
        save=lambda v, d: write_tensors(d / "measures.safetensors", v),
        load=lambda d: read_tensors(d / "measures.safetensors"),
    )
    top_heads = [(int(a), int(b)) for a, b in measures["top_heads"]]

    clock.stage("generations", "generating replies for every condition")

    def replies() -> list[dict]:
        prompts = [p for c in conditions for p in c.prompts]
        texts = generate(model, prompts, max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size)
        verdicts = make_judge(settings.judge, model).judge_many(texts, prompts)
        rows, i = [], 0
        for condition in conditions:
            for instruction in condition.instructions:
                rows.append(
                    {
                        "condition": condition.name,
                        "instruction": instruction,
                        "suffix": condition.suffix,
                        "reply": texts[i],
                        "refused": bool(verdicts[i]),
                    }
                )
                i += 1
        return rows

    generations = run.stage(
        "generations",
        {**base, "max_new_tokens": settings.max_new_tokens, "judge": settings.judge},
        replies,
        save=lambda v, d: write_jsonl(d / "generations.jsonl", v),
        load=lambda d: read_jsonl(d / "generations.jsonl"),
    )

    clock.stage("views", "attention patterns for the views")
    views = []
    for condition in conditions[:3]:  # the first harmful instruction under each harmful condition
        instruction = condition.instructions[0]
        patterns, ids = full_attention(model, instruction + condition.suffix, top_heads)
        views.append(
            AttentionView(
                condition.name,
                instruction,
                condition.suffix,
                [model.decode(i) for i in ids],
                patterns,
                token_regions(model, instruction, condition.suffix),
            )
        )
    clock.finish()

    by_condition = {
        c.name: ConditionMeasures(
            **{
                key: measures[f"{key}/{c.name}"]
                for key in ("cosine", "heads", "mlp", "embed", "attn_bias", "projection", "allowed_error", "shares")
            }
        )
        for c in conditions
    }
    # DFA must account for the whole projection (up to the model's own rounding): a gap means the
    # architecture writes to the stream through something DFA does not read, and the head
    # attributions are not the whole story. Said loudly; the summary records it.
    for name, measured in by_condition.items():
        if not measured.complete:
            logger.warning(
                "direct feature attribution on %s misses part of the projection (largest gap %.3g, more than the "
                "model's rounding allows); the head and MLP attributions do not add up to the stream",
                name,
                measured.completeness_error,
            )
    return SuffixHijackResult(
        settings=settings,
        model=model.identity(),
        n_layers=model.n_layers,
        direction_layer=stored.layer,
        direction_position=stored.position,
        direction_source=str(stored.path),
        direction_mismatches=direction_mismatches(stored, model),
        suffix=suffix,
        random_suffix=control,
        n_suffix_tokens=n_suffix_tokens,
        conditions=conditions,
        measures=by_condition,
        top_heads=top_heads,
        generations=generations,
        views=views,
        harmful_source=harmful_source,
        harmless_source=harmless_source,
        resumed_stages=list(run.resumed),
        timings=clock.timings,
    )
