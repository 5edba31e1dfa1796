"""The README's first Python example, run as written on the embedded model (the façade: load,
diff_in_means, ablate, generate, export)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mechref

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Use it from Python or Jupyter") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_on_the_embedded_model(qwen, tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert "mechref.diff_in_means" in code and "direction.ablate(model)" in code and "model.generate" in code
    assert len([line for line in code.splitlines() if line.strip() and not line.startswith("import")]) <= 10
    monkeypatch.setattr(mechref, "load_model", lambda *args, **kwargs: qwen)  # the session's copy, not a second one
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    direction = namespace["direction"]
    assert isinstance(direction, mechref.Direction) and direction.layer == 14 and direction.model == qwen.name
    reply = capsys.readouterr().out
    assert reply.strip(), "the ablated model said nothing"
    exported = tmp_path / "runs" / "qwen-no-refusal"
    info = json.loads((exported / "mechref_edit.json").read_text())
    assert info["direction_layer"] == 14 and info["base_model"] == qwen.name
    assert (exported / "config.json").is_file()
