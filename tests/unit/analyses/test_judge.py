"""``python -m mechref.analyses.judge``: label any completions file; agreement where labels are given."""

from __future__ import annotations

import csv
import json

import pytest

from mechref.analyses.judge.command import main
from mechref.errors import DataFormatError
from mechref.judges.completions import parse_label, read_completions


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {"prompt": "p1", "completion": "I'm sorry, I can't.", "label": True},
    {"prompt": "p2", "completion": "Sure, here it is.", "label": False},
    {"prompt": "p3", "completion": "It is not appropriate to say that.", "label": True},
    {"prompt": "p4", "completion": "Here: step 1, I cannot stress enough...", "label": False},
    {"prompt": "p5", "completion": "Happy to help!"},
]


def test_labels_a_file_and_reports_agreement_against_its_labels(tmp_path, capsys):
    source = write_jsonl(tmp_path / "replies.jsonl", ROWS)
    out = tmp_path / "judged.jsonl"
    assert main([str(source), "--judge", "arditi", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["refusal"] for r in rows] == [True, False, False, True, False]
    assert all(r["judge"] == "arditi" for r in rows) and rows[4]["label"] is None and rows[0]["prompt"] == "p1"
    assert "judged refusals: 0.40 (2/5)" in printed
    # On the 4 labelled rows: one refusal found, one missed, one false alarm, one answer: accuracy 0.5, kappa 0.
    assert "against the 4 labelled rows" in printed and "accuracy 0.500" in printed and "Cohen's kappa 0.000" in printed
    # Written again over its own output; never over someone else's file.
    assert main([str(source), "--judge", "substring", "--out", str(out)]) == 0
    assert json.loads(out.read_text().splitlines()[2])["refusal"] is True  # mechref's list reads "not appropriate"
    capsys.readouterr()
    notes = write_jsonl(tmp_path / "notes.jsonl", [{"my": "data"}])
    assert main([str(source), "--out", str(notes)]) == 2
    assert "was not written by mechref.analyses.judge" in capsys.readouterr().err
    assert notes.read_text() == '{"my": "data"}\n'


def test_reads_xstest_csv_labels(tmp_path):
    path = tmp_path / "x.csv"
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, ["id", "prompt", "completion", "final_label"])
        writer.writeheader()
        for i, label in enumerate(["1_full_compliance", "2_full_refusal", "3_partial_refusal"]):
            writer.writerow({"id": i, "prompt": "q", "completion": "a, b", "final_label": label})
    assert [r["label"] for r in read_completions(path)] == [False, True, True]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "p"}\n', "line 1 has no text completion"),
        ("not json\n", "line 1 is not JSON"),
        ("[1, 2]\n", "line 1 is not a JSON object"),
        ('{"prompt": "p", "completion": "c", "label": "maybe"}\n', "label 'maybe' is not a refusal label"),
        ("\n", "holds no completions"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bad_options_fail_before_any_model_loads(tmp_path, capsys):
    source = write_jsonl(tmp_path / "replies.jsonl", ROWS)
    assert main([str(tmp_path / "missing.jsonl")]) == 2
    assert "no completions file" in capsys.readouterr().err
    assert main([str(source), "--judge-model", "x"]) == 2
    assert "--judge-model is for --judge chat-model" in capsys.readouterr().err
    assert main([str(source), "--language", "it"]) == 2
    assert "no validated phrase list for language 'it'" in capsys.readouterr().err
    assert main([str(source), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_chat_model_judge_writes_its_score(tmp_path, tiny_folder, capsys):
    source = write_jsonl(tmp_path / "replies.jsonl", ROWS[:2])
    out = tmp_path / "judged.jsonl"
    assert (
        main([str(source), "--judge", "chat-model", "--judge-model", str(tiny_folder), "--dtype", "float32", "--out", str(out)])
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["refusal"] == (r["score"] > 0) for r in rows)
    assert rows[0]["judge"].startswith("chat-model (")


def test_parse_label_rejects_numbers_other_than_0_and_1():
    with pytest.raises(DataFormatError, match="not a refusal label"):
        parse_label(2, "row 1")


def test_the_mined_judge_mines_one_file_and_judges_another(tmp_path, capsys):
    from pathlib import Path

    labels = Path(__file__).resolve().parents[3] / "benchmarks" / "judge_labels" / "zh.jsonl"
    rows = [json.loads(line) for line in labels.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["refused"] is not None]
    mine = write_jsonl(
        tmp_path / "mine.jsonl",
        [{"prompt": r["instruction"], "completion": r["reply"], "prompt_class": r["label_class"]} for r in rows[::2]],
    )
    judged = write_jsonl(
        tmp_path / "judge.jsonl",
        [{"prompt": r["instruction"], "completion": r["reply"], "label": r["refused"]} for r in rows[1::2]],
    )
    assert main([str(judged), "--judge", "mined", "--language", "zh", "--mine-from", str(mine)]) == 0
    printed = capsys.readouterr().out
    kappa = float(printed.split("Cohen's kappa ")[1].split()[0])
    assert "mined from" in printed and kappa >= 0.8  # held-out replies, a person's labels
    for argv in (["--judge", "mined"], ["--judge", "mined", "--mine-from", str(judged)], ["--mine-from", str(mine)]):
        assert main([str(judged), *argv]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("mechref: error: ") and "--mine-from" in e for e in errors)
