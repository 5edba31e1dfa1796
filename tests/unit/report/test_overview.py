"""``mechref report RUNS_DIR``: one page across run folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mechref.cli import main
from mechref.framework.ownership import RUN_MARKER, OutputTargetError
from mechref.rates import Rate
from mechref.report.overview import REPORT_NAME, Run, find_runs, key_numbers, write_overview


def make_run(folder, summary, files=()):
    folder.mkdir(parents=True)
    (folder / RUN_MARKER).write_text("{}")
    (folder / "summary.json").write_text(json.dumps(summary))
    for name in files:
        (folder / name).write_text("x")
    return folder


def test_finds_nested_runs_only_where_mechref_wrote_them(tmp_path):
    make_run(tmp_path / "a" / "direction", {"bypass_score": 0.1, "layer": 4})
    make_run(tmp_path / "a" / "b" / "hijack", {"analysis": "suffix_hijack"})
    # A summary.json in a folder mechref did not mark is someone else's: not a run.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "summary.json").write_text("{}")
    make_run(tmp_path / "1" / "2" / "3" / "4" / "5" / "deep", {"analysis": "quickstart"})
    runs = find_runs(tmp_path)
    assert sorted((r.folder.relative_to(tmp_path).as_posix(), r.kind) for r in runs) == [
        ("a/b/hijack", "suffix_hijack"),
        ("a/direction", "refusal_direction"),
    ]
    assert [r.kind for r in find_runs(tmp_path, max_depth=6)].count("quickstart") == 1


def test_key_numbers_carry_counts_and_wilson_intervals():
    rate = Rate(3, 11)
    low, high = rate.interval
    run = Run(Path("."), {"refusal_rate_counts": {"harmful": rate.to_dict()}, "layer": 2}, "unknown")
    assert key_numbers(run) == [("refusal, harmful", f"0.27 = 3/11 [{low:.2f}, {high:.2f}]")]
    # A suffix run lists the heads its suffix moves, "none" when there are none.
    hijack = Run(Path("."), {"attention_shift": {"heads_moved_by_the_adversarial_suffix": []}}, "suffix_hijack")
    assert ("top heads whose attention the suffix moves", "none") in key_numbers(hijack)
    # A multilingual run: its over-refusing languages and each language's harmful refusal with counts.
    audit = {"yo": {"harmful_counts": Rate(15, 16).to_dict()}, "en": {"harmful_counts": None}}
    languages = Run(Path("."), {"refuses_most_harmless_prompts": ["yo"], "baseline_refusal": audit}, "multilingual")
    shown = dict(key_numbers(languages))
    assert shown["over-refusing (not understood?)"] == "yo" and shown["harmful refused, yo"].startswith("0.94 = 15/16 [")
    assert "harmful refused, en" not in shown


def test_page_links_every_run_and_file_and_never_overwrites_a_foreign_file(tmp_path, capsys):
    counts = Rate(18, 22).to_dict()
    make_run(
        tmp_path / "direction",
        {
            "analysis": "refusal_direction",
            "model": "m",
            "layer": 20,
            "position": -1,
            "figures": ["scores.html"],
            "refusal_rate_counts": {"harmful_baseline": counts},
        },
        ["scores.html", "scores.png", "direction.safetensors", "selection.manifest.json", "index.html"],
    )
    make_run(tmp_path / "hijack", {"analysis": "suffix_hijack", "figures": ["gone.html"]}, ["summary.txt"])
    assert main(["report", str(tmp_path)]) == 0
    assert f"2 runs; report in {tmp_path / REPORT_NAME}" in capsys.readouterr().out
    page = (tmp_path / REPORT_NAME).read_text()
    targets = set(re.findall(r'(?:href|src)="([^"#]+)"', page))
    assert all((tmp_path / t).is_file() for t in targets), targets
    assert {"direction/index.html", "direction/scores.png", "direction/direction.safetensors", "hijack/summary.json"} <= targets
    assert "18/22 [0.61, 0.93]" in page and "no figures" in page  # the hijack run's figure is missing: said so
    assert page.count('<section class="run">') == 2
    # Written a second time over its own page; never over a file it did not write.
    assert main(["report", str(tmp_path)]) == 0
    foreign = tmp_path / "mine.html"
    foreign.write_text("<html>my notes</html>")
    with pytest.raises(OutputTargetError, match="not written by mechref report"):
        write_overview(tmp_path, foreign)
    assert foreign.read_text() == "<html>my notes</html>"
    # The page may sit elsewhere: its links are relative to it.
    elsewhere = tmp_path / "pages"
    elsewhere.mkdir()
    page = write_overview(tmp_path, elsewhere / "all.html").read_text()
    assert all((elsewhere / t).resolve().is_file() for t in re.findall(r'(?:href|src)="([^"#]+)"', page))


def test_bad_folders_are_one_line_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no mechref run under" in err and len(err.strip().splitlines()) == 1
    make_run(tmp_path / "broken", {})
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / REPORT_NAME).exists()
