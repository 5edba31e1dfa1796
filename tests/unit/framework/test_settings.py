"""Settings objects: one source of truth for Python, config files and the command line."""

import argparse
import ast
import json
from pathlib import Path

import pytest

from mechref.analyses.command import analysis_parser, parse_analysis_args
from mechref.analyses.gcg.pipeline import GCGSettings
from mechref.analyses.multilingual import MultilingualSettings
from mechref.analyses.quickstart import QuickstartSettings
from mechref.analyses.refusal_direction import RefusalDirectionSettings
from mechref.analyses.suffix_hijack import SuffixHijackSettings
from mechref.framework.settings import SettingsError, add_arguments, resolve
from mechref.model.settings import ModelSettings

ALL = [RefusalDirectionSettings, SuffixHijackSettings, MultilingualSettings, QuickstartSettings, GCGSettings]
EXAMPLES = [
    RefusalDirectionSettings(
        n_test=5,
        filter=False,
        refusal_tokens=[40, 7],
        static=[],
        kl_threshold=1e9,
        export_model=Path("x"),
        selection="exhaustive",
    ),
    SuffixHijackSettings(suffix="abc", n=3, resume=False, direction=Path("d.safetensors"), judge="chat-model"),
    MultilingualSettings(languages=["en", "de"], refusal_tokens=["de=1,2"], layer=3, audit=False),
    QuickstartSettings(layer=0.5, n_eval=2),
    GCGSettings(prompt=["a b", "c"], early_stop_loss=None, steps=3),
]


@pytest.mark.parametrize("settings", EXAMPLES, ids=lambda s: type(s).__name__)
def test_command_line_round_trip(settings):
    """The options to_argv writes parse back to the same settings: every field has a working option."""
    parser = argparse.ArgumentParser()
    add_arguments(parser, type(settings))
    assert resolve(type(settings), parser.parse_args(settings.to_argv())) == settings


@pytest.mark.parametrize("settings", EXAMPLES, ids=lambda s: type(s).__name__)
def test_dict_and_file_round_trip(settings, tmp_path):
    assert type(settings).from_dict(settings.to_dict()) == settings
    path = tmp_path / "s.json"
    path.write_text(json.dumps(settings.to_dict()))
    assert type(settings).from_file(path) == settings


def test_layers_of_defaults_config_and_command_line(tmp_path):
    """defaults < config file < options given; model and analysis keys share one file."""
    config = tmp_path / "run.toml"
    config.write_text('out = "elsewhere"\n[model]\ndtype = "float32"\n[selection]\nn-train = 16\ntop_k = 3\n')
    parser = analysis_parser("x", None, RefusalDirectionSettings, "runs/x")
    model, settings, out = parse_analysis_args(
        parser, RefusalDirectionSettings, ["--config", str(config), "--top-k", "5"], "runs/x"
    )
    assert (model.dtype, settings.n_train, settings.top_k, out) == ("float32", 16, 5, Path("elsewhere"))
    assert settings.n_val == RefusalDirectionSettings().n_val and model.model is None
    _, _, out = parse_analysis_args(parser, RefusalDirectionSettings, [], "runs/x")
    assert out == Path("runs/x")


@pytest.mark.parametrize(
    "text, message",
    [
        ("n_trian = 3", "unknown setting(s) n_trian"),
        ("n_train = 0", "n_train must be at least 1, got 0 (--n-train)"),
        ("n_train = 2.5", "n_train takes an integer"),
        ('selection = "slow"', "selection must be one of fast, exhaustive"),
        ("prune_layer_fraction = 1.5", "prune_layer_fraction must be at most 0.95"),
        ("refusal_tokens = []", "refusal_tokens is empty"),
        ("n_train = ", "is not valid TOML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text + "\n")
    parser = analysis_parser("x", None, RefusalDirectionSettings, "runs/x")
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_analysis_args(parser, RefusalDirectionSettings, ["--config", str(config)], "runs/x")


def test_bad_options_fail_before_the_model_loads(monkeypatch, capsys, tmp_path):
    from mechref.analyses import multilingual, refusal_direction, suffix_hijack

    def no_load(self):
        raise AssertionError("the model must not load for bad settings")

    monkeypatch.setattr(ModelSettings, "load", no_load)
    for main, argv, message in [
        (refusal_direction.main, ["--n-train", "0"], "n_train must be at least 1"),
        (refusal_direction.main, ["--config", str(tmp_path / "none.toml")], "does not exist"),
        (suffix_hijack.main, ["--suffix", "x", "--run-gcg"], "at most one of"),
        (suffix_hijack.main, ["--top-k", "0"], "top_k must be at least 1"),
        (multilingual.main, ["--refusal-tokens", "de=x"], "LANG=ID,ID"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mechref: error:") and message in err and "\n" not in err


def test_library_never_imports_the_command_lines():
    """Only the command-line modules (``analyses/``, ``cli``, ``judge``) import mechref.analyses or mechref.cli."""
    root = Path(__file__).resolve().parents[3] / "mechref"
    offenders = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).as_posix()
        if relative.startswith("analyses/") or relative in ("cli.py", "__main__.py", "judge.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            offenders += [f"{relative}: {n}" for n in names if n.startswith(("mechref.analyses", "mechref.cli"))]
    assert offenders == []
