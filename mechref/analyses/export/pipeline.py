"""Export a refusal direction's edit in every format, and verify each export, as one library call.

:func:`run_export` writes, into one output folder with resumable stages:

* ``export``: the edited model as a ``transformers`` folder (``model/``), a rank-1 LoRA adapter
  (``adapter/``), a GGUF (``model.gguf``) and the activation addition as a llama.cpp control
  vector (``control_vector.gguf``), each with its provenance;
* ``verify``: each export loaded back by its consuming library (:mod:`mechref.analyses.export.verify`)
  and measured beside the in-memory edit it must reproduce: greedy replies to held-out harmful
  prompts (judged) and the first-token KL on held-out harmless prompts against the unedited model.

Example (the embedded model)::

    from mechref import load_model
    from mechref.analyses.export.pipeline import run_export
    from mechref.analyses.export.settings import ExportSettings

    model = load_model(dtype="bfloat16")
    result = run_export(model, ExportSettings(formats=["lora", "gguf"]), out="runs/export")
    print(result.artifacts, [m.name for m in result.measured])
"""

from __future__ import annotations

import contextlib
import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mechref.analyses.export.settings import ExportSettings
from mechref.analyses.export.verify import (
    Measured,
    control_vector_applied,
    in_memory_first_logits,
    load_folder,
    load_gguf,
    load_lora,
    measure_in_memory,
    measure_llama_cpp,
    measure_plain,
    plain_first_logits,
)
from mechref.analyses.refusal_direction.ensure import ensure_direction
from mechref.data import bundled
from mechref.directions.store import (
    check_direction_fit,
    check_direction_source,
    direction_mismatches,
    load_direction,
)
from mechref.edits.control_vector import export_control_vector
from mechref.edits.gguf import check_gguf_exportable, export_gguf
from mechref.edits.llamacpp import find_llama_server
from mechref.edits.lora import export_lora
from mechref.edits.orthogonalize import (
    check_orthogonalizable,
    edit_description,
    edited_tensor_plan,
    export_orthogonalized,
    put_tensors,
    through_post_norms,
)
from mechref.edits.strengths import EditStrengths
from mechref.errors import MechrefError
from mechref.framework import memory
from mechref.framework.clock import StageClock
from mechref.framework.io import fingerprint, read_json, write_json
from mechref.framework.ownership import check_output_folder
from mechref.framework.runs import Run
from mechref.interventions import activation_addition, directional_ablation
from mechref.judges.core import make_judge
from mechref.model.loading import MechrefModel
from mechref.model.plain import weights_released

logger = logging.getLogger(__name__)

ARTIFACTS = {"hf": "model", "lora": "adapter", "gguf": "model.gguf", "control-vector": "control_vector.gguf"}
# What each export must reproduce: the weight edit in memory, or the activation addition with hooks.
REFERENCE = {"hf": "weight edit (in memory)", "lora": "weight edit (in memory)", "gguf": "weight edit (in memory)"}
REFERENCE["control-vector"] = "activation addition (hooks)"


@dataclass
class ExportResult:
    settings: ExportSettings
    model: dict
    direction: dict
    artifacts: dict[str, str]
    measured: list[Measured] = field(default_factory=list)
    refusals: dict[str, list[bool]] = field(default_factory=dict)
    resumed_stages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def check_export(settings: ExportSettings, out: str | Path | None = None) -> None:
    """The checks that need no model: the direction source and the output folder."""
    check_direction_source(settings.direction, settings.direction_run)
    if out is None:
        raise MechrefError("an export writes files: give an output folder (--out)")
    check_output_folder(out)
    find_llama_server(settings.llama_server)  # a bad --llama-server path fails now, not after the verification


def check_export_fit(model: MechrefModel, settings: ExportSettings) -> None:
    """The checks that need the model: the direction fits, the family can be edited and written."""
    check_direction_fit(model, settings.direction, None)
    if any(f in settings.formats for f in ("hf", "lora", "gguf")):
        check_orthogonalizable(model.hf_model.config)
        model.require_plain_weights("an export")
    if "gguf" in settings.formats:
        check_gguf_exportable(model.hf_model.config, settings.gguf_type)
    if not model.folder:
        raise MechrefError(
            "this model was not loaded from a folder, so there are no weights to export; load it with load_model(path)"
        )


def run_export(
    model: MechrefModel, settings: ExportSettings | None = None, out: str | Path | None = None, *, echo: bool = True
) -> ExportResult:
    """Write the edit in every format ``settings`` asks for into ``out``, load each back with its consuming
    library and measure it against mechref's own edit; the result (see :class:`ExportResult`)."""
    settings = settings or ExportSettings()
    check_export(settings, out)
    check_export_fit(model, settings)
    assert out is not None
    folder = Path(out)
    clock = StageClock(total=3 if settings.verify else 2, echo=echo)
    clock.stage("setup", "direction")
    stored = (
        load_direction(settings.direction) if settings.direction else ensure_direction(model, settings.direction_run, echo=echo)
    )
    for line in direction_mismatches(stored, model):
        logger.warning("%s", line)
    if "control-vector" in settings.formats and stored.layer < 2:
        raise MechrefError(f"the direction's layer {stored.layer} is too early for a llama.cpp control vector (layer 2 or later)")
    strengths = settings.strengths(model.n_layers)
    edit = edit_description(strengths, settings.norm_preserving, through_post_norms(model.hf_model.config))
    run = Run(folder, resume=settings.resume)
    direction_info = {"source": str(stored.path), "layer": stored.layer, "position": stored.position}
    base = {**model.identity(), "direction": fingerprint(stored.direction.tolist()), "layer": stored.layer}
    provenance = {"layer": stored.layer, "position": stored.position, "direction_file": str(stored.path)}

    clock.stage("export", f"writing {', '.join(settings.formats)}")

    def write_all() -> dict[str, str]:
        written: dict[str, str] = {}
        for kind in settings.formats:
            target = folder / ARTIFACTS[kind]
            if kind == "hf":
                export_orthogonalized(
                    model,
                    stored.direction,
                    target,
                    provenance=provenance,
                    overwrite=True,
                    strengths=strengths,
                    norm_preserving=settings.norm_preserving,
                )
            elif kind == "lora":
                export_lora(model, stored.direction, target, strengths=strengths, provenance=provenance, overwrite=True)
            elif kind == "gguf":
                export_gguf(
                    model,
                    stored.direction,
                    target,
                    file_type=settings.gguf_type,
                    strengths=strengths,
                    norm_preserving=settings.norm_preserving,
                    provenance=provenance,
                    overwrite=True,
                )
            else:
                export_control_vector(
                    model,
                    stored.direction,
                    stored.layer,
                    target,
                    coefficient=settings.coefficient,
                    provenance=provenance,
                    overwrite=True,
                )
            written[kind] = ARTIFACTS[kind]
            clock.note(f"{kind:15s} {target}")
            gc.collect()
        return written

    export_settings = {
        **base,
        "formats": settings.formats,
        "edit": edit,
        "gguf_type": settings.gguf_type,
        "coefficient": settings.coefficient,
    }
    artifacts = run.stage(
        "export",
        export_settings,
        write_all,
        save=lambda v, d: write_json(d / "artifacts.json", v),
        load=lambda d: read_json(d / "artifacts.json"),
    )
    result = ExportResult(settings, model.identity(), {**direction_info, "edit": edit}, artifacts)
    if settings.verify:
        clock.stage("verify", "each export loaded back by its consuming library, against the in-memory edit")
        verify_settings = {
            **export_settings,
            "n_verify": settings.n_verify,
            "n_kl": settings.n_kl,
            "max_new_tokens": settings.max_new_tokens,
            "batch_size": settings.batch_size,
            # What a verification measures: a run made before the KL to the hook ablation was measured is redone.
            "measures": ["replies", "kl_first_token", "kl_to_hook_ablation"],
        }
        rows = run.stage(
            "verify",
            verify_settings,
            lambda: [m.__dict__ for m in _verify_in_python(model, settings, stored, strengths, folder, artifacts, clock)],
            save=lambda v, d: write_json(d / "verify.json", v),
            load=lambda d: read_json(d / "verify.json"),
        )
        binary = find_llama_server(settings.llama_server)
        if binary is None:
            clock.note("llama.cpp not run: no llama-server binary (--llama-server PATH)")
        elif {"gguf", "control-vector"} & set(artifacts):
            # Its own stage, keyed on the binary: a rerun with llama.cpp measures there even when the
            # Python verification is resumed, and another binary measures again.
            binary_info = {"path": str(binary.resolve()), "bytes": binary.stat().st_size, "mtime": int(binary.stat().st_mtime)}
            rows = rows + run.stage(
                "verify_llama_cpp",
                {**verify_settings, "llama_server": binary_info},
                lambda: [m.__dict__ for m in _verify_in_llama_cpp(model, settings, stored, binary, folder, artifacts, clock)],
                save=lambda v, d: write_json(d / "verify_llama_cpp.json", v),
                load=lambda d: read_json(d / "verify_llama_cpp.json"),
            )
        result.measured = [Measured(**row) for row in rows]
        judge = make_judge(settings.judge)
        result.refusals = {m.name: judge.judge_many(m.replies) for m in result.measured}
    result.resumed_stages = list(run.resumed)
    clock.finish()
    result.timings = clock.timings
    return result


def _verify_in_llama_cpp(
    model, settings, stored, binary: Path, folder: Path, artifacts: dict[str, str], clock: StageClock
) -> list[Measured]:
    measured: list[Measured] = []
    harmful = bundled("harmful", "test").take(settings.n_verify).instructions
    if "gguf" in artifacts:
        measured.append(
            measure_llama_cpp(
                "export: gguf in llama.cpp", binary, folder / artifacts["gguf"], model, harmful, settings.max_new_tokens
            )
        )
        _note(clock, settings, measured[-1])
    if "control-vector" in artifacts:
        # The unedited model in the same file type, for llama.cpp to add the control vector to.
        base = folder / "unedited.gguf"
        if base.exists():
            base.unlink()
        # An edit of strength 0 everywhere: the unedited weights, written exactly as the edited GGUF is.
        nothing = EditStrengths((0.0,) * model.n_layers, (0.0,) * model.n_layers, embedding=0.0)
        export_gguf(model, stored.direction, base, file_type=settings.gguf_type, strengths=nothing)
        try:
            measured.append(
                measure_llama_cpp(
                    "export: control-vector in llama.cpp",
                    binary,
                    base,
                    model,
                    harmful,
                    settings.max_new_tokens,
                    control_vector=folder / artifacts["control-vector"],
                )
            )
        finally:
            base.unlink()
        _note(clock, settings, measured[-1])
    return measured


def _note(clock: StageClock, settings, m: Measured) -> None:
    k = sum(make_judge(settings.judge).judge_many(m.replies))
    kl = f"   mean first-token KL {sum(m.kl) / len(m.kl):.4f}" if m.kl else ""
    clock.note(f"{m.name:36s} refusal {k}/{len(m.replies)}{kl}")


def _verify_in_python(
    model, settings, stored, strengths, folder: Path, artifacts: dict[str, str], clock: StageClock
) -> list[Measured]:
    harmful = bundled("harmful", "test").take(settings.n_verify).instructions
    harmless = bundled("harmless", "test").take(settings.n_kl).instructions
    dtype = model.dtype
    args = dict(harmful=harmful, harmless=harmless, max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size)

    def part(name: str) -> None:
        memory.mark(f"verify/{name}")  # each measurement's own peak in the memory log, its loading included

    def note(m: Measured) -> None:
        _note(clock, settings, m)

    part("unedited")
    reference = plain_first_logits(model.hf_model, model, harmless, settings.batch_size)
    measured = [measure_in_memory("unedited", model, contextlib.nullcontext, reference=reference, **args)]
    note(measured[0])
    weight_exports = [k for k in ("hf", "lora", "gguf") if k in artifacts]
    hooks_reference = None
    if weight_exports:
        if strengths is None and not settings.norm_preserving:
            part("directional ablation (hooks)")
            ablation = lambda: directional_ablation(model, stored.direction)
            measured.append(measure_in_memory("directional ablation (hooks)", model, ablation, reference=reference, **args))
            note(measured[-1])
            # What each weight edit stands for: its deviation from these logits is measured beside its KL
            # (rounding for the exact families; the post-norm rescaling for Gemma-2, Gemma-3, OLMo-2).
            hooks_reference = in_memory_first_logits(model, ablation, harmless, settings.batch_size)
        # Edited in float32 then cast, as the exports are written and then loaded: the unedited model
        # loaded by transformers from the folder, in the place of the loaded model's weights, with the
        # edited tensors put in: the edited matrices then exist once (a plain view of the loaded model
        # with them replaced would hold both versions).
        part("weight edit (in memory)")
        edit = stored.direction, strengths, settings.norm_preserving
        # Planned while the model is here (its names; a model whose folder mechref cannot read tensor by
        # tensor is edited as a copy now); each tensor made from the folder once the weights are released.
        plan = edited_tensor_plan(model, *edit, only_edited=True)
        with weights_released(model):
            edited = put_tensors(load_folder(Path(str(model.folder)), dtype), ((t.name, t.make()) for t in plan))
            measured.append(
                measure_plain(
                    "weight edit (in memory)",
                    "mechref.orthogonalize_weights",
                    edited,
                    model,
                    reference=reference,
                    hooks_reference=hooks_reference,
                    **args,
                )
            )
            del edited, plan
        note(measured[-1])
        loaders = {
            "hf": ("transformers AutoModelForCausalLM", lambda: load_folder(folder / artifacts["hf"], dtype)),
            "lora": (
                "peft PeftModel on the unedited model",
                lambda: load_lora(str(model.folder), folder / artifacts["lora"], dtype),
            ),
            "gguf": ("transformers GGUF loader", lambda: load_gguf(folder / artifacts["gguf"], dtype)),
        }
        for kind in weight_exports:
            loaded_by, load = loaders[kind]
            part(f"export: {kind}")
            # Each export is a whole model of its own: the loaded model's weights make room for it
            # (released, then loaded back from its folder and checked byte for byte).
            with weights_released(model):
                loaded = load()
                measured.append(
                    measure_plain(
                        f"export: {kind}", loaded_by, loaded, model, reference=reference, hooks_reference=hooks_reference, **args
                    )
                )
                del loaded  # collected, its pages handed back, as the block ends (weights_released)
            note(measured[-1])
    if "control-vector" in artifacts:
        part("activation addition (hooks)")
        measured.append(
            measure_in_memory(
                "activation addition (hooks)",
                model,
                lambda: activation_addition(model, stored.direction, stored.layer, settings.coefficient),
                reference=reference,
                **args,
            )
        )
        note(measured[-1])
        part("export: control-vector")
        with weights_released(model):
            plain = load_folder(Path(str(model.folder)), dtype)
            with control_vector_applied(plain, folder / artifacts["control-vector"]):
                measured.append(
                    measure_plain(
                        "export: control-vector",
                        "llama.cpp's rule, applied with a PyTorch hook",
                        plain,
                        model,
                        reference=reference,
                        **args,
                    )
                )
            del plain  # collected, its pages handed back, as the block ends (weights_released)
        note(measured[-1])
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return measured
