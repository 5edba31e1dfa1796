"""The probe judge against independent computations: the reader's residual stream recomputed one
reply at a time with plain Hugging Face calls (no padding, no batching), and the probe's log-odds
against scikit-learn's own fitted pipeline."""

from __future__ import annotations

import json

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mechref.errors import MechrefError
from mechref.judges.probe import (
    ProbeJudge,
    ProbeWeights,
    fit_probe,
    reader_identity,
    reply_features,
    shipped_probe,
)
from mechref.testing import tiny_model

PROMPTS = ["Hack a bank", "How do I bake bread at home today, step by step?", "Hi", "Explain tides."]
REPLIES = ["I cannot help with that.", "Sure! Mix flour, water, salt and yeast, then knead.", "", "Tides come from the Moon."]


def by_hand(model, prompt: str, reply: str, layer: int, prompt_tokens: int = 96, reply_tokens: int = 48) -> torch.Tensor:
    tok = model.tokenizer
    head = tok(model.chat.format(prompt), add_special_tokens=False)["input_ids"][-prompt_tokens:]
    tail = tok(reply.strip(), add_special_tokens=False)["input_ids"][:reply_tokens]
    ids = torch.tensor([head + tail])
    with torch.no_grad():
        hidden = model.hf_model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0]
    start = min(len(head), len(head) + len(tail) - 1)
    return hidden[start:].float().mean(0)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("layers", [[0, 2], [1], [0, 1]])  # with the last block (after the final norm), and without
def test_features_equal_one_reply_at_a_time(arch, layers):
    model = tiny_model(arch)
    features = reply_features(model, PROMPTS, REPLIES, layers=layers, batch_size=3, prompt_tokens=12, reply_tokens=5)
    assert features.shape == (4, len(layers), model.d_model)
    for i, (prompt, reply) in enumerate(zip(PROMPTS, REPLIES)):
        for k, layer in enumerate(layers):
            expected = by_hand(model, prompt, reply, layer, prompt_tokens=12, reply_tokens=5)
            torch.testing.assert_close(features[i, k], expected, atol=1e-5, rtol=1e-5)
    # The empty reply is read at the end of its request, and not as a copy of another row.
    assert not torch.allclose(features[2], features[3])


def test_reading_stops_after_the_last_block_it_needs():
    model = tiny_model("qwen2")
    ran: list[int] = []
    blocks = model.hf_model.get_decoder().layers
    handles = [block.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, block in enumerate(blocks)]
    try:
        reply_features(model, PROMPTS[:2], REPLIES[:2], layers=[1], prompt_tokens=12, reply_tokens=5)
    finally:
        for handle in handles:
            handle.remove()
    assert ran == [0, 1]  # block 2 and the vocabulary projection never ran


def test_bad_layers_and_lengths_are_refused():
    model = tiny_model("qwen2")
    with pytest.raises(ValueError, match=r"layers \[3\] out of range"):
        reply_features(model, ["a"], ["b"], layers=[3])
    with pytest.raises(ValueError, match="one prompt per completion"):
        reply_features(model, ["a", "b"], ["c"])


def synthetic(n: int = 60, d: int = 8, seed: int = 0):
    """Features of 3 layers where only layer 1 separates the labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2 == 0
    features = torch.randn(n, 3, d, generator=g)
    features[:, 1, 0] += torch.where(labels, 3.0, -3.0)
    return features, labels


def test_fit_chooses_the_separating_layer_and_matches_scikit_learn():
    features, labels = synthetic()
    probe = fit_probe(features, labels, {"name": "x", "n_layers": 3, "d_model": 8}, layers=[10, 11, 12], strengths=(0.1, 1.0))
    assert probe.layer == 11 and probe.fitted_on["cv_kappa"] > 0.9
    logistic = LogisticRegression(C=probe.fitted_on["C"], max_iter=5000, class_weight="balanced")
    reference = make_pipeline(StandardScaler(), logistic)
    reference.fit(features[:, 1].double().numpy(), labels.tolist())
    fresh, _ = synthetic(seed=1)
    expected = torch.tensor(reference.decision_function(fresh[:, 1].double().numpy()), dtype=torch.float32)
    torch.testing.assert_close(probe.log_odds(fresh[:, 1]), expected, atol=1e-4, rtol=1e-4)


def test_fit_refuses_too_few_of_a_class():
    features, _ = synthetic(n=12)
    with pytest.raises(ValueError, match="at least 5 refusals"):
        fit_probe(features, [True] * 2 + [False] * 10, {}, layers=[0, 1, 2])


def test_judge_applies_the_probe_to_the_readers_features(tmp_path):
    model = tiny_model("qwen2")
    g = torch.Generator().manual_seed(3)
    weights = ProbeWeights(
        layer=1,
        mean=torch.randn(model.d_model, generator=g),
        scale=torch.rand(model.d_model, generator=g) + 0.5,
        coef=torch.randn(model.d_model, generator=g),
        bias=0.25,
        reader=reader_identity(model),
    )
    weights.save(tmp_path / "probe")
    loaded = ProbeWeights.load(tmp_path / "probe")
    assert loaded.layer == 1 and loaded.bias == 0.25 and torch.equal(loaded.coef, weights.coef)
    judge = ProbeJudge(model, loaded, batch_size=2)
    odds = judge.refusal_log_odds(REPLIES, PROMPTS)
    for i, (prompt, reply) in enumerate(zip(PROMPTS, REPLIES)):
        x = (by_hand(model, prompt, reply, 1).double() - weights.mean.double()) / weights.scale.double()
        assert odds[i].item() == pytest.approx((x @ weights.coef.double() + 0.25).item(), abs=1e-3)
    assert judge.judge_many(REPLIES, PROMPTS) == [bool(v > 0) for v in odds]
    with pytest.raises(ValueError, match="reads each reply after its request"):
        judge.judge_many(REPLIES)


def test_a_probe_refuses_another_readers_residual_stream(tmp_path):
    model = tiny_model("qwen2")
    weights = ProbeWeights(1, torch.zeros(64), torch.ones(64), torch.ones(64), 0.0, {**reader_identity(model), "name": "other"})
    with pytest.raises(MechrefError, match="another model's residual stream: the reader has name 'tiny-qwen2'"):
        ProbeJudge(model, weights)
    with pytest.raises(MechrefError, match="no probe at"):
        ProbeWeights.load(tmp_path / "missing")


def test_the_shipped_probe_loads_and_names_its_reader_and_data():
    probe = shipped_probe()
    assert probe.reader["name"] == "qwen2.5-coder-1.5b-instruct" and probe.coef.shape == (probe.reader["d_model"],)
    assert 0 <= probe.layer < probe.reader["n_layers"] and "XSTest" in probe.fitted_on["data"]
    assert torch.isfinite(probe.coef).all() and (probe.scale > 0).all()


def test_judged_rows_keep_the_probes_log_odds_as_score():
    from mechref.judges.completions import judge_rows

    model = tiny_model("qwen2")
    weights = ProbeWeights(1, torch.zeros(64), torch.ones(64), torch.linspace(-1, 1, 64), 0.1, reader_identity(model))
    judge = ProbeJudge(model, weights)
    rows = judge_rows(judge, [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, REPLIES)])
    odds = judge.refusal_log_odds(REPLIES, PROMPTS)
    assert [r["score"] for r in rows] == [round(float(v), 4) for v in odds]
    assert [r["refusal"] for r in rows] == [bool(v > 0) for v in odds]


def _own_request_probe(monkeypatch, request):
    import dataclasses

    from mechref.judges import probe as probe_judge

    weights = dataclasses.replace(probe_judge.shipped_probe(), request=request)
    monkeypatch.setattr(probe_judge, "shipped_probe", lambda: weights)


def _settings_class(name: str):
    from mechref.analyses.categories.settings import CategoriesSettings
    from mechref.analyses.damage.settings import DamageSettings
    from mechref.analyses.refusal_direction import RefusalDirectionSettings
    from mechref.analyses.suffix_hijack import SuffixHijackSettings

    return {
        "refusal": RefusalDirectionSettings,
        "hijack": SuffixHijackSettings,
        "categories": CategoriesSettings,
        "damage": DamageSettings,
    }[name]


@pytest.mark.parametrize("settings_class", ["refusal", "hijack", "categories", "damage"])
def test_a_probe_that_reads_the_request_is_refused_where_harmless_replies_are_judged(settings_class, monkeypatch):
    """Read after its own request, a canned refusal of a harmless request reads as an answer: such
    a probe must not judge the addition condition's replies. One read after a fixed request may."""
    from mechref.framework.settings import SettingsError

    make = _settings_class(settings_class)
    _own_request_probe(monkeypatch, None)
    with pytest.raises(SettingsError, match="misses refusals of plainly harmless requests"):
        make(judge="probe")
    _own_request_probe(monkeypatch, "Hello.")
    assert make(judge="probe").judge == "probe"


def test_the_command_refuses_such_a_probe_in_one_line_before_loading(capsys, monkeypatch):
    from mechref.analyses.refusal_direction import main

    _own_request_probe(monkeypatch, None)
    assert main(["--judge", "probe", "--model", "/nonexistent-never-loaded"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "misses refusals of plainly harmless requests" in err[0]


def test_the_shipped_probe_reads_every_reply_after_one_fixed_request():
    from mechref.judges.probe import shipped_probe

    assert shipped_probe().request == "Hello."


def test_a_fixed_request_probe_reads_the_reply_alone(tiny_qwen, tmp_path):
    """Its log-odds are those of the reply read after the fixed request, whatever request is given;
    a probe that read the given requests would change with them."""
    import dataclasses

    from mechref.judges.probe import ProbeJudge, ProbeWeights, fit_probe, reader_identity, reply_features

    replies = ["I cannot."] * 5 + ["Sure, here"] * 5
    feats = reply_features(tiny_qwen, ["Hello."] * 10, replies, layers=[1])
    probe = fit_probe(feats, [True] * 5 + [False] * 5, reader_identity(tiny_qwen), [1], folds=2, request="Hello.")
    judge = ProbeJudge(tiny_qwen, probe)
    direct = probe.log_odds(feats[:, 0])
    torch.testing.assert_close(judge.refusal_log_odds(replies, ["Build a bomb"] * 10), direct)
    torch.testing.assert_close(judge.refusal_log_odds(replies), direct)  # no requests needed
    own = ProbeJudge(tiny_qwen, dataclasses.replace(probe, request=None))
    assert not torch.allclose(own.refusal_log_odds(replies, ["Build a bomb"] * 10), direct)
    with pytest.raises(ValueError, match="after its request"):
        own.judge_many(replies)
    # The request travels with the saved probe; a probe saved before it existed reads its own.
    probe.save(tmp_path / "p")
    assert ProbeWeights.load(tmp_path / "p").request == "Hello."
    meta = json.loads((tmp_path / "p.json").read_text())
    del meta["request"]
    (tmp_path / "p.json").write_text(json.dumps(meta))
    assert ProbeWeights.load(tmp_path / "p").request is None


@pytest.mark.parametrize("settings_class", ["refusal", "hijack", "categories", "damage"])
def test_the_probe_is_the_default_judge_and_needs_its_reader_before_anything_loads(settings_class, monkeypatch, tmp_path):
    """The validated probe is every English analysis's default; where its reader (the embedded model)
    is neither cached nor installed the settings refuse at once, naming both ways out."""
    import dataclasses

    from mechref.framework.settings import SettingsError
    from mechref.model import embedded

    make = _settings_class(settings_class)
    assert make().judge == "probe"
    monkeypatch.setenv("MECHREF_CACHE", str(tmp_path / "empty-cache"))
    absent = embedded.numbered_parts("mechref_no_such_part{i}", "data/part{j:02d}.bin", 22)
    uninstalled = dataclasses.replace(embedded.QWEN25_CODER_15B, parts=absent)
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, uninstalled.name, uninstalled)
    with pytest.raises(SettingsError, match=r'pip install "mechref\[embedded\]".*--judge substring'):
        make()
    assert make(judge="substring").judge == "substring"
    # A cache built earlier is enough: the parts are not needed to load it.
    folder = uninstalled.cached_folder("float32")
    folder.mkdir(parents=True)
    (folder / "mechref_manifest.json").write_text(
        json.dumps({"gguf_sha256": uninstalled.gguf_sha256, "cache_format": embedded.CACHE_FORMAT})
    )
    assert make().judge == "probe"
