import json
import subprocess
import sys

import pytest

from mechref.cli import main
from mechref.testing import tiny_model_folder


def test_help_everywhere(capsys):
    for argv in ([], ["--help"], ["model", "--help"], ["model", "info", "--help"]):
        try:
            main(argv)
        except SystemExit as exit:
            assert exit.code == 0
    assert "model" in capsys.readouterr().out


def test_model_info_json(tmp_path, capsys):
    tiny_model_folder(tmp_path, "llama")
    assert main(["model", "info", "--model", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_layers"] == 3 and info["d_model"] == 64 and info["n_heads"] == 4 and info["dtype"] == "float32"
    assert info["architecture"] == "LlamaForCausalLM" and "cache_dir" in info


def test_model_info_of_a_model_without_a_chat_template(tmp_path, capsys):
    """A base model is described (its chat template marked absent); an analysis on it stops before loading,
    naming --chat-template."""
    folder = tiny_model_folder(tmp_path / "base", "llama")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    assert main(["model", "info", "--model", str(folder)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["chat_template"] is False and info["post_instruction_tokens"] == []
    assert main(["quickstart", "--model", str(folder), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "has no chat template" in captured.err and "--chat-template" in captured.err
    assert "loading model" not in captured.out and not (tmp_path / "out").exists()
    assert main(["quickstart", "--model", str(folder), "--chat-template", "gema", "--out", str(tmp_path / "o")]) == 2
    assert "unknown chat template" in capsys.readouterr().err


def test_errors_are_reported_not_raised(capsys):
    assert main(["model", "info", "--model", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "mechref", "--help"], capture_output=True, text=True, check=True)
    assert "quickstart" in out.stdout


def test_the_mechref_command_passes_options_to_an_analysis(capsys):
    from mechref.cli import main

    # An analysis's options, --help included, reach its own parser (not refused by mechref's).
    with pytest.raises(SystemExit) as done:
        main(["damage", "--help"])
    assert done.value.code == 0 and "--edited" in capsys.readouterr().out
    assert main(["quickstart", "--n-eval", "0"]) == 2
    assert "--n-eval" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("mechref.analyses.cosine_parallelism", "python -m mechref.analyses.multilingual --parts cosine"),
        ("mechref.analyses.silhouette", "python -m mechref.analyses.multilingual --parts audit silhouette"),
        ("mechref.judge", "python -m mechref.analyses.judge"),
        ("mechref.attacks.gcg", "python -m mechref.analyses.gcg"),
    ],
)
def test_an_old_command_path_says_in_one_line_where_it_went(old, new):
    done = subprocess.run([sys.executable, "-m", old], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mechref: error: ") and new in lines[0], lines
    assert done.stdout == ""


def test_an_old_module_path_names_its_new_home():
    import importlib

    with pytest.raises(ModuleNotFoundError, match=r"^mechref\.models moved to mechref\.model\.loading$"):
        importlib.import_module("mechref.models")
    with pytest.raises(
        ModuleNotFoundError, match=r"mechref\.hijack\.pipeline moved to mechref\.analyses\.suffix_hijack\.pipeline"
    ):
        importlib.import_module("mechref.hijack.pipeline")
    with pytest.raises(ModuleNotFoundError, match="import run_damage from there"):
        from mechref.damage import run_damage  # noqa: F401
    # Names that were never mechref's stay ordinary import errors.
    with pytest.raises(ModuleNotFoundError, match=r"No module named 'mechref\.no_such_module'"):
        importlib.import_module("mechref.no_such_module")
