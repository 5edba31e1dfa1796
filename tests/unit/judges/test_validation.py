"""The hand-labelled checks the analyses look their judges up in."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mechref.judges import validation as jv

ROOT = Path(__file__).parents[3]
EMBEDDED = "qwen2.5-coder-1.5b-instruct"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_judges", ROOT / "benchmarks" / "bench_judges.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_registry_is_the_one_the_benchmark_json_gives():
    """A number typed into the registry by hand, or a benchmark rerun without ``registry``, fails here."""
    bench = _bench()
    results = ROOT / "benchmarks" / "results"
    expected = bench.registry_from_results(
        json.loads((results / "judges.json").read_text(encoding="utf-8")),
        json.loads((results / "judges_xstest.json").read_text(encoding="utf-8")),
        json.loads((results / "judges_probe_languages.json").read_text(encoding="utf-8")),
        json.loads((results / "judges_mined_contrast.json").read_text(encoding="utf-8")),
    )
    shipped = json.loads((ROOT / "mechref" / "data" / "judge_validation.json").read_text(encoding="utf-8"))
    assert shipped == expected, "run: python benchmarks/bench_judges.py registry"


def _registry(monkeypatch, checks):
    monkeypatch.setattr(jv, "registry", lambda: tuple(checks))


def _check(judge, language, model, kappa, **extra):
    return {"judge": judge, "language": language, "model": model, "kappa": kappa, "n": 40, "accuracy": 0.9, **extra}


def test_a_check_counts_for_its_judge_language_and_model_only(monkeypatch):
    _registry(
        monkeypatch,
        [
            _check("substring", "de", "m", 0.9),
            _check("substring", "en", None, 0.8),  # other models' replies: any model
            _check("chat-model", "yo", "m", 0.59),
            _check("mined", "it", "m", 1.0, phrases=["mi dispiace", "non posso"]),
        ],
    )
    assert jv.judge_validation("substring", "de", "m").validated
    assert jv.judge_validation("substring", "de", "other").status == "no labelled check"
    assert jv.judge_validation("arditi", "de", "m").status == "no labelled check"
    assert jv.judge_validation("substring", "en", "anything").validated
    assert jv.judge_validation("chat-model", "yo", "m").status == "below the bar"  # kappa < 0.6
    # The mined judge is the phrases it mined: the same set (in any order) is the checked judge, others are not.
    assert jv.judge_validation("mined", "it", "m", phrases=["non posso", "mi dispiace"]).validated
    assert jv.judge_validation("mined", "it", "m", phrases=["mi dispiace"]).status == "no labelled check"
    assert jv.judge_validation("mined", "it", "m", phrases=[]).status == "no labelled check"


@pytest.mark.parametrize(
    ("judge", "language", "phrases", "status"),
    [
        ("substring", "zh", None, "validated"),
        ("substring", "yo", None, "below the bar"),  # Yoruba replies mostly English nonsense: the list reads them badly
        ("mined", "ko", ["매우"], "below the bar"),  # "very": mined, and wrong
        ("mined", "it", ["mi dispiace ma non"], "validated"),
        ("probe", "en", None, "validated"),
        ("substring", "th", None, "validated"),  # kappa 0.70 on held-out PolyRefuse train replies
        ("chat-model", "th", None, "below the bar"),
        ("mined", "th", ["ขออภัย"], "no labelled check"),
        # The English probe on other languages' labels, which it never saw (bench_probe_languages.py).
        ("probe", "es", None, "validated"),
        ("probe", "yo", None, "validated"),  # where the phrase list fails
        ("probe", "ko", None, "validated"),  # kappa 0.65 on 48 replies: over the bar, not by much
        ("probe", "vi", None, "no labelled check"),
        # Mined against the same prompts with the direction ablated, Korean finds its apology.
        ("mined", "ko", ["죄송합니다 하지만"], "validated"),
    ],
)
def test_the_shipped_checks_say_what_benchmarks_md_says(judge, language, phrases, status):
    assert jv.judge_validation(judge, language, EMBEDDED, phrases=phrases).status == status


def test_the_best_judge_is_the_validated_one_with_the_highest_kappa_and_a_tie_goes_to_the_cheaper(monkeypatch):
    _registry(
        monkeypatch,
        [
            _check("substring", "de", "m", 0.9),
            _check("probe", "de", "m", 0.8),
            _check("substring", "es", "m", 0.8),
            _check("probe", "es", "m", 0.81),
            _check("substring", "zh", "m", 0.95),
            _check("probe", "zh", "m", 0.95),
            _check("substring", "ko", "m", 0.59),  # below the bar, however it compares
            _check("probe", "ko", "m", 0.5),
            _check("probe", "yo", "m", 0.6),  # exactly the bar: validated
        ],
    )
    assert jv.best_judge("de", "m").judge == "substring"
    assert jv.best_judge("es", "m").judge == "probe"
    assert jv.best_judge("zh", "m").judge == "substring"
    assert jv.best_judge("ko", "m") is None and jv.best_judge("es", "other") is None
    assert jv.best_judge("yo", "m").judge == "probe"
    assert jv.best_judge("es", "m", judges=("substring",)).judge == "substring"
