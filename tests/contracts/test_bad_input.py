"""Bad input is refused with one line ``mechref: error: …`` and exit code 2, before the model
loads where the check does not need the model, and before any forward pass where it does."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from mechref.framework.io import write_tensors
from mechref.model.settings import ModelSettings


class ModelLoaded(Exception):
    """Raised by the patched loader: the check under test ran too late."""


@pytest.fixture
def no_model(monkeypatch):
    def refuse(self):
        raise ModelLoaded("the model was loaded before the input was checked")

    monkeypatch.setattr(ModelSettings, "load", refuse)


@pytest.fixture
def tiny_loaded(monkeypatch, tiny_qwen):
    """Loading gives the tiny model; any forward pass fails the test (the check must come first)."""
    monkeypatch.setattr(ModelSettings, "load", lambda self: tiny_qwen)

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward pass ran before the input was checked")

    monkeypatch.setattr(tiny_qwen.bridge, "forward", no_forward)
    return tiny_qwen


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Every test here runs a command. Its memory check sizes the default (embedded) model from the
    # cache, which a fresh machine would first build (gigabytes, a minute); test_need.py tests it.
    monkeypatch.setattr(ModelSettings, "check_memory", lambda self, settings, given=None: (settings, []))
    Path("bad.json").write_text('{"bad json')
    Path("mixed.json").write_text('[{"instruction": "ok"}, 3]')
    Path("empty.json").write_text("[]")
    Path("no_field.json").write_text('[{"prompt": "x"}]')
    Path("notes").mkdir()
    Path("notes/thesis.tex").write_text("mine")
    Path("not_a_tensor.safetensors").write_text("hello")
    write_tensors("nan.safetensors", {"direction": torch.tensor([1.0, float("nan"), 0, 0])}, {"layer": "1"})
    write_tensors("ints.safetensors", {"direction": torch.arange(4)}, {"layer": "1"})
    write_tensors("matrix.safetensors", {"direction": torch.ones(2, 4)}, {"layer": "1"})
    write_tensors("wide.safetensors", {"direction": torch.ones(7)}, {"layer": "1", "position": "-1"})
    Path("long.json").write_text(json.dumps([{"instruction": "word " * 400}]))
    Path("user_suffix.json").write_text('{"suffix": "mine"}')
    Path("bad.toml").write_text("n = [")
    Path("unknown.toml").write_text("nn = 3")
    # A user's prompt tables in other languages: a class missing, and a column that is no language code.
    Path("no_harmless_test.csv").write_text("label,split,vi\nharmful,train,a\nharmless,train,b\nharmful,test,c\n")
    Path("bad_column.csv").write_text("label,split,vietnamese\nharmful,train,a\n")
    return tmp_path


def run_cli(name: str, argv: list[str], capsys) -> tuple[int, str]:
    module = importlib.import_module(f"mechref.analyses.{name}")
    try:
        code = module.main(argv)
    except SystemExit as exit_info:  # argparse's own errors (types, choices) exit from inside the parser
        code = exit_info.code
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


WITHOUT_MODEL = [
    # numbers out of range, for every command
    ("refusal_direction", ["--n-train", "0"], "n_train must be at least 1"),
    ("refusal_direction", ["--n-val", "-1"], "n_val must be at least 1"),
    ("refusal_direction", ["--n-test", "0"], "n_test must be at least 1"),
    ("refusal_direction", ["--n-test", "-3"], "n_test must be at least 1"),
    ("refusal_direction", ["--kl-threshold", "-0.5"], "kl_threshold must be at least 0"),
    ("refusal_direction", ["--prune-layer-fraction", "1.5"], "at most 0.95"),
    ("refusal_direction", ["--top-k", "0"], "top_k must be at least 1"),
    ("refusal_direction", ["--proxy-prompts", "0"], "proxy_prompts must be at least 1"),
    ("refusal_direction", ["--batch-size", "0"], "batch_size must be at least 1"),
    ("refusal_direction", ["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
    ("refusal_direction", ["--n-train", "abc"], "invalid int value"),
    ("refusal_direction", ["--n-train", "100000"], "has only"),
    ("suffix_hijack", ["--n", "0"], "n must be at least 1"),
    ("suffix_hijack", ["--top-k", "0"], "top_k must be at least 1"),
    ("suffix_hijack", ["--gcg-steps", "0"], "gcg_steps must be at least 1"),
    ("suffix_hijack", ["--gcg-prompts", "0"], "gcg_prompts must be at least 1"),
    ("suffix_hijack", ["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
    ("suffix_hijack", ["--batch-size", "0"], "batch_size must be at least 1"),
    ("multilingual", ["--n-train", "0"], "n_train must be at least 1"),
    ("multilingual", ["--n-test", "0"], "n_test must be at least 1"),
    ("multilingual", ["--layer", "-2"], "layer must be at least 0"),
    ("multilingual", ["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
    ("multilingual", ["--batch-size", "0"], "batch_size must be at least 1"),
    ("multilingual", ["--parts", "cosine", "--n-train", "0"], "n_train must be at least 1"),
    ("multilingual", ["--parts", "silhouette", "--n-test", "0"], "n_test must be at least 1"),
    ("multilingual", ["--parts", "pca"], "unknown parts ['pca']"),
    ("gcg", ["--n", "0"], "n must be at least 1"),
    ("gcg", ["--steps", "0"], "steps must be at least 1"),
    ("gcg", ["--suffix-length", "0"], "suffix_length must be at least 1"),
    ("gcg", ["--top-k", "0"], "top_k must be at least 1"),
    ("gcg", ["--n-candidates", "0"], "n_candidates must be at least 1"),
    ("gcg", ["--batch-size", "0"], "batch_size must be at least 1"),
    ("gcg", ["--early-stop-loss", "-1"], "early_stop_loss must be at least 0"),
    ("gcg", ["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
    ("quickstart", ["--n-train", "0"], "n_train must be at least 1"),
    ("quickstart", ["--n-eval", "0"], "n_eval must be at least 1"),
    ("quickstart", ["--layer", "-1"], "layer must be at least 0"),
    ("quickstart", ["--layer", "2.5"], "whole number"),
    ("quickstart", ["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
    ("quickstart", ["--batch-size", "0"], "batch_size must be at least 1"),
    # model options
    ("refusal_direction", ["--dtype", "int8"], "invalid choice"),
    ("refusal_direction", ["--device", "tpu"], "unknown device"),
    # token ids
    ("refusal_direction", ["--refusal-tokens", "-1"], "negative"),
    ("refusal_direction", ["--refusal-tokens", "5", "5"], "given twice"),
    ("multilingual", ["--refusal-tokens", "de=-4"], "negative"),
    ("multilingual", ["--refusal-tokens", "de=4,4"], "given twice"),
    ("multilingual", ["--refusal-tokens", "de=abc"], "LANG=ID,ID"),
    ("multilingual", ["--languages", "en", "de", "--refusal-tokens", "fr=5"], "not among the languages"),
    # languages
    ("multilingual", ["--languages", "xx"], "no language 'xx'"),
    ("multilingual", ["--languages", "en", "en"], "distinct"),
    # files that do not exist or do not parse
    ("refusal_direction", ["--harmful-train", "missing.json"], "does not exist"),
    ("refusal_direction", ["--harmful-train", "bad.json"], "not valid JSON"),
    ("refusal_direction", ["--harmful-train", "mixed.json"], "row 1"),
    ("refusal_direction", ["--harmless-test", "empty.json"], "empty"),
    ("refusal_direction", ["--harmful-val", "no_field.json"], "missing the 'instruction' field"),
    ("refusal_direction", ["--splits", "missing"], "expected harmful_train.json"),
    ("refusal_direction", ["--config", "missing.toml"], "does not exist"),
    ("refusal_direction", ["--config", "bad.json"], "not valid JSON"),
    ("refusal_direction", ["--config", "bad.toml"], "not valid TOML"),
    ("refusal_direction", ["--config", "unknown.toml"], "unknown setting(s) nn"),
    ("suffix_hijack", ["--harmful", "bad.json"], "not valid JSON"),
    ("suffix_hijack", ["--suffix-file", "missing.json"], "does not exist"),
    ("suffix_hijack", ["--suffix-file", "empty.json"], "non-empty string field"),
    ("suffix_hijack", ["--direction", "missing.safetensors"], "no direction file"),
    ("suffix_hijack", ["--direction", "not_a_tensor.safetensors"], "not a readable safetensors file"),
    ("suffix_hijack", ["--direction", "nan.safetensors"], "NaN"),
    ("suffix_hijack", ["--direction", "ints.safetensors"], "floating-point"),
    ("suffix_hijack", ["--direction", "matrix.safetensors"], "1-D"),
    ("suffix_hijack", ["--suffix", "   "], "suffix is empty"),
    ("suffix_hijack", ["--suffix", "x", "--run-gcg"], "at most one of"),
    ("multilingual", ["--data", "missing"], "does not exist"),
    ("multilingual", ["--data", "no_harmless_test.csv"], "no harmless test rows"),
    ("multilingual", ["--data", "bad_column.csv"], "unknown column 'vietnamese'"),
    ("multilingual", ["--harmless-data", "no_harmless_test.csv"], "give --data too"),
    ("multilingual", ["--harmful-only"], "give --data"),
    ("multilingual", ["--harmful-only", "--data", "bad_column.csv", "--harmless-data", "bad_column.csv"], "every part runs"),
    ("multilingual", ["--harmful-only", "--data", "no_harmless_test.csv", "--parts", "audit", "cosine"], "needs harmless"),
    ("multilingual", ["--harmful-only", "--data", "no_harmless_test.csv", "--parts", "repair"], "needs harmless"),
    ("multilingual", ["--parts", "repair", "--no-audit"], "repair compares with the audit"),
    ("multilingual", ["--direction", "nan.safetensors"], "NaN"),
    ("gcg", ["--harmful", "empty.json"], "empty"),
    ("gcg", ["--prompt", " "], "non-empty instruction"),
    ("gcg", ["--target", " "], "target is empty"),
    # output targets that hold someone else's files
    ("refusal_direction", ["--out", "notes"], "holds files mechref did not write"),
    ("refusal_direction", ["--export-model", "notes"], "holds files mechref did not write"),
    ("refusal_direction", ["--export-model", "."], "working directory"),
    ("refusal_direction", ["--export-model", ".."], "working directory"),
    ("refusal_direction", ["--out", "bad.json"], "is a file"),
    ("suffix_hijack", ["--out", "notes"], "holds files mechref did not write"),
    ("suffix_hijack", ["--direction-run", "notes"], "holds files mechref did not write"),
    ("multilingual", ["--out", "notes"], "holds files mechref did not write"),
    ("quickstart", ["--out", "notes"], "holds files mechref did not write"),
    ("gcg", ["--out", "user_suffix.json"], "not written by mechref"),
    ("gcg", ["--out", "notes"], "is a folder"),
]


@pytest.mark.parametrize("name,argv,message", WITHOUT_MODEL, ids=[f"{n} {' '.join(a)}" for n, a, _ in WITHOUT_MODEL])
def test_refused_before_the_model_loads(name, argv, message, files, no_model, capsys):
    code, line = run_cli(name, argv, capsys)
    assert code == 2, line
    assert line.startswith("mechref: error: "), line
    assert message in line, line


def test_argparse_errors_are_one_line_too(files, no_model, capsys):
    module = importlib.import_module("mechref.analyses.refusal_direction")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--no-such-option"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mechref: error: unrecognized arguments: --no-such-option"), err


def test_negative_numbers_are_values_not_options(files, no_model, capsys):
    from mechref.analyses.refusal_direction import COMMAND

    _, settings, _ = COMMAND.parse(["--induce-threshold", "-1e9", "--seed", "-3"])
    assert settings.induce_threshold == -1e9 and settings.seed == -3


WITH_MODEL = [
    ("refusal_direction", ["--refusal-tokens", "100000"], "outside this model's vocabulary"),
    ("refusal_direction", ["--harmful-test", "long.json"], "exceeds the model's context"),
    ("multilingual", ["--languages", "en", "de", "--layer", "99"], "out of range"),
    ("multilingual", ["--languages", "en", "de", "--refusal-tokens", "de=100000"], "outside this model's vocabulary"),
    ("multilingual", ["--languages", "en", "--direction", "wide.safetensors"], "width"),
    ("suffix_hijack", ["--direction", "wide.safetensors"], "width"),
    ("suffix_hijack", ["--harmful", "long.json", "--direction", "wide.safetensors"], "width"),
    ("quickstart", ["--layer", "40"], "out of range"),
    ("gcg", ["--harmful", "long.json"], "exceeds the model's context"),
]


@pytest.mark.parametrize("name,argv,message", WITH_MODEL, ids=[f"{n} {' '.join(a)}" for n, a, _ in WITH_MODEL])
def test_refused_before_any_forward_pass(name, argv, message, files, tiny_loaded, capsys):
    code, line = run_cli(name, ["--out", "run", *argv] if name != "gcg" else argv, capsys)
    assert code == 2, line
    assert line.startswith("mechref: error: ") and message in line, line


def test_unexpected_errors_are_one_line_with_a_saved_traceback(files, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MECHREF_CACHE", str(tmp_path / "cache"))

    def broken(self):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(ModelSettings, "load", broken)
    code, line = run_cli("refusal_direction", [], capsys)
    assert code == 1
    assert line.startswith("mechref: internal error: ZeroDivisionError: planted (traceback saved to ")
    saved = Path(line.split("traceback saved to ")[1].split(";")[0])
    assert saved.is_file() and "ZeroDivisionError: planted" in saved.read_text()
    assert saved.is_relative_to(tmp_path / "cache")


def test_ctrl_c_says_how_to_resume(files, monkeypatch, capsys):
    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(ModelSettings, "load", interrupted)
    code, line = run_cli("refusal_direction", [], capsys)
    assert code == 130 and "resumes" in line
