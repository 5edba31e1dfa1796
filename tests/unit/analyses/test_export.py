"""The export command end to end on a tiny model: every format written, loaded back by its
consuming library, and measured beside the in-memory edit; resumed; bad input refused early."""

from __future__ import annotations

import json

import pytest
import torch

from mechref.framework.io import write_tensors
from mechref.model.loading import load_model
from mechref.testing import tiny_model_folder

pytest.importorskip("peft")
pytest.importorskip("gguf")


@pytest.fixture()
def setup(tmp_path):
    folder = tiny_model_folder(tmp_path / "tiny", "qwen2", n_layers=4)
    model = load_model(str(folder), device="cpu")
    direction = tmp_path / "direction.safetensors"
    vector = 20 * torch.randn(model.d_model, generator=torch.Generator().manual_seed(7))
    write_tensors(direction, {"direction": vector}, metadata={"layer": "2", "position": "-1", "model": model.name})
    return model, direction


def test_every_export_is_written_loaded_back_and_reproduces_the_in_memory_edit(tmp_path, setup):
    from mechref.analyses.export.pipeline import run_export
    from mechref.analyses.export.report import report_export
    from mechref.analyses.export.settings import ExportSettings

    model, direction = setup
    settings = ExportSettings(direction=direction, gguf_type="f32", n_verify=4, n_kl=4, max_new_tokens=6, static=[])
    out = tmp_path / "out"
    result = run_export(model, settings, out, echo=False)
    summary = report_export(result, out, echo=False)
    assert set(summary["artifacts"]) == {"hf", "lora", "gguf", "control-vector"}
    assert (out / "model" / "config.json").is_file() and (out / "adapter" / "adapter_config.json").is_file()
    conditions = summary["conditions"]
    assert list(conditions) == [
        "unedited", "directional ablation (hooks)", "weight edit (in memory)", "export: hf", "export: lora",
        "export: gguf", "activation addition (hooks)", "export: control-vector",
    ]  # fmt: skip
    replies = {row["name"]: row["replies"] for row in json.loads((out / "verify.json").read_text())}
    # A float32 export read back is the in-memory edit: the same greedy replies, the same KL.
    for kind in ("hf", "lora", "gguf"):
        assert replies[f"export: {kind}"] == replies["weight edit (in memory)"], kind
        assert conditions[f"export: {kind}"]["reproduces_reference"] is True
        assert conditions[f"export: {kind}"]["identical_replies"] == 4
        kl = conditions[f"export: {kind}"]["kl_first_token"]["mean"]
        assert kl == pytest.approx(conditions["weight edit (in memory)"]["kl_first_token"]["mean"], rel=1e-3, abs=1e-5)
    assert replies["directional ablation (hooks)"] == replies["weight edit (in memory)"]
    assert replies["export: control-vector"] == replies["activation addition (hooks)"]
    assert replies["activation addition (hooks)"] != replies["unedited"]  # the vector does change the replies
    assert conditions["unedited"]["kl_first_token"]["mean"] == pytest.approx(0, abs=1e-6)
    assert conditions["export: hf"]["kl_first_token"]["mean"] > 1e-3  # the edit is really there
    assert (out / "index.html").is_file() and "exports.html" in summary["figures"]
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["direction"]["layer"] == 2 and set(manifest["artifacts"]) == set(summary["artifacts"])
    lora = manifest["artifacts"]["lora"]["measured"]["lora"]
    assert lora["refusal"] == conditions["export: lora"]["refusal"] and lora["reproduces_reference"] is True
    edit = json.loads((out / "adapter" / "mechref_edit.json").read_text())
    assert edit["measured"]["lora"]["kl_first_token"] == conditions["export: lora"]["kl_first_token"]
    # Same settings again: nothing is recomputed.
    again = run_export(model, settings, out, echo=False)
    assert again.resumed_stages == ["export", "verify"]


def test_bad_export_settings_fail_before_the_model_loads(tmp_path, capsys):
    from mechref.analyses.export import main

    for args, message in [
        (["--formats", "onnx"], "unknown export format onnx"),
        (["--formats", "lora", "--norm-preserving"], "no LoRA export"),
        (["--mlp-kernel", "3", "0", "0", "1"], "width must be positive"),
        (["--direction", str(tmp_path / "missing.safetensors")], "missing.safetensors"),
    ]:
        assert main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mechref: error:") and message in err[0], (args, err)
    assert not (tmp_path / "out").exists()


def test_in_bfloat16_the_in_memory_reference_is_the_export_as_loaded(tmp_path, setup):
    """The verification's in-memory edit, cast to bfloat16, gives the logits of the exported folder
    loaded in bfloat16 to the bit (a whole-module cast would also round the rotary frequencies)."""
    from mechref.analyses.export.verify import load_folder
    from mechref.directions.store import load_direction
    from mechref.edits.orthogonalize import edited_copy, export_orthogonalized
    from mechref.model.loading import cast_weights

    model, direction = setup
    stored = load_direction(direction)
    export_orthogonalized(model, stored.direction, tmp_path / "exported")
    loaded = load_folder(tmp_path / "exported", torch.bfloat16)
    edited = cast_weights(edited_copy(model, stored.direction, "a test")[0], torch.bfloat16).eval()
    ids = torch.tensor([list(range(5, 45))])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, edited(input_ids=ids).logits)
        # What the verification used to compare against: the whole module cast, frequencies too.
        rounded = edited_copy(model, stored.direction, "a test")[0].to(torch.bfloat16).eval()
        assert not torch.equal(loaded(input_ids=ids).logits, rounded(input_ids=ids).logits)


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_the_weight_edits_deviation_from_the_hooks_is_measured_and_written_with_the_export(tmp_path, arch):
    """Exact family: the deviation is rounding, ``close``. Gemma-3 (post-norms): the export is made through the
    norms, its KL from the hooks is measured (independently: recomputed here from the two models' logits) and
    written into the summary, the manifest, the folder's mechref_edit.json and its model card."""
    from mechref.analyses.export.pipeline import run_export
    from mechref.analyses.export.report import format_summary, report_export
    from mechref.analyses.export.settings import ExportSettings
    from mechref.analyses.export.verify import load_folder, plain_first_logits
    from mechref.data import bundled
    from mechref.interventions import directional_ablation
    from mechref.scoring import kl_divergence

    folder = tiny_model_folder(tmp_path / "tiny", arch, n_layers=3)
    model = load_model(str(folder), device="cpu")
    direction = tmp_path / "direction.safetensors"
    vector = 20 * torch.randn(model.d_model, generator=torch.Generator().manual_seed(7))
    write_tensors(direction, {"direction": vector}, metadata={"layer": "2", "position": "-1", "model": model.name})
    settings = ExportSettings(direction=direction, formats=["hf"], n_verify=3, n_kl=4, max_new_tokens=4, static=[])
    out = tmp_path / "out"
    summary = report_export(run_export(model, settings, out, echo=False), out, echo=False)
    deviation = summary["deviation_from_hook_ablation"]
    assert deviation["through_post_norms"] is (arch == "gemma3")
    harmless = bundled("harmless", "test").take(4).instructions
    with directional_ablation(model, vector):
        hooks = plain_first_logits(model.hf_model, model, harmless, 4)
    exported = plain_first_logits(load_folder(out / "model", torch.float32), model, harmless, 4)
    expected = float(kl_divergence(hooks, exported).mean())
    assert deviation["kl_first_token"]["mean"] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert summary["conditions"]["export: hf"]["kl_to_hook_ablation"]["mean"] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    info = json.loads((out / "model" / "mechref_edit.json").read_text())
    card = (out / "model" / "README.md").read_text()
    assert info["deviation_from_hook_ablation"] == deviation
    assert json.loads((out / "MANIFEST.json").read_text())["deviation_from_hook_ablation"] == deviation
    assert "measured deviation from the directional ablation with hooks" in card
    if arch == "qwen2":
        assert expected < 1e-6 and deviation["close"] is True and "NOT the hook ablation" not in format_summary(summary)
        assert "through_post_norms" not in info["edit"]
    else:
        assert expected > 1e-4  # the norms rescale what each writer keeps: a real deviation
        assert info["edit"]["through_post_norms"] is True and "through post-norms" in card
        assert deviation["close"] is (
            expected <= max(0.005, 0.1 * summary["conditions"]["directional ablation (hooks)"]["kl_first_token"]["mean"])
        )
