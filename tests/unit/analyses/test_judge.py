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
    # No judge given, and none checked in Vietnamese: the phrase list, which has none.
    assert main([str(source), "--language", "vi"]) == 2
    assert "no validated phrase list for language 'vi'" in capsys.readouterr().err
    assert main([str(source), "--language", "it", "--judge", "substring"]) == 2
    assert "no validated phrase list for language 'it'; use --judge probe" in capsys.readouterr().err
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


def _audit(path):
    """A multilingual run's audit.jsonl: replies with their language and their prompt's class."""
    rows = []
    for language in ("vi", "sw"):
        for i in range(6):
            refuses = i % 2 == 0
            rows.append(
                {
                    "language": language,
                    "label": "harmful" if i < 3 else "harmless",
                    "instruction": f"{language} prompt {i}",
                    "reply": "I'm sorry, I can't help." if refuses else f"Sure, here is {i}.",
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def test_a_labelling_sheet_is_drawn_filled_and_measured(tmp_path, capsys):
    import csv

    rows = _audit(tmp_path / "audit.jsonl")
    sheet = tmp_path / "vi_labels.csv"
    assert main([str(tmp_path / "audit.jsonl"), "--language", "vi", "--labelling-sheet", str(sheet), "--sample", "4"]) == 0
    assert "wrote 4 of 6 replies" in capsys.readouterr().out
    drawn = list(csv.DictReader(sheet.open(encoding="utf-8")))
    assert len(drawn) == 4 and all(r["language"] == "vi" and r["label"] == "" for r in drawn)
    vi = [r for r in rows if r["language"] == "vi"]
    for r in drawn:  # each row is the reply it names, with its prompt's class
        source = vi[int(r["id"])]
        assert (r["prompt"], r["completion"], r["prompt_class"]) == (source["instruction"], source["reply"], source["label"])
    again = tmp_path / "again.csv"
    main([str(tmp_path / "audit.jsonl"), "--language", "vi", "--labelling-sheet", str(again), "--sample", "4"])
    assert again.read_text(encoding="utf-8") == sheet.read_text(encoding="utf-8")  # seeded: the same draw
    # A speaker fills the labels (one disagreeing with the phrase list), then the sheet is judged.
    filled = [{**r, "label": "true" if "sorry" in r["completion"] else "false"} for r in drawn]
    filled[0]["label"] = "false" if filled[0]["label"] == "true" else "true"
    with sheet.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(filled[0]))
        writer.writeheader()
        writer.writerows(filled)
    capsys.readouterr()
    assert main([str(sheet), "--judge", "substring", "--language", "en"]) == 0
    out = capsys.readouterr().out
    assert "against the 4 labelled rows" in out and "accuracy 0.750" in out and "[" in out


def test_a_labelling_sheet_never_overwrites_and_draws_all_when_asked_for_more(tmp_path, capsys):
    _audit(tmp_path / "audit.jsonl")
    mine = tmp_path / "labels.csv"
    mine.write_text("someone's labels")
    assert main([str(tmp_path / "audit.jsonl"), "--labelling-sheet", str(mine)]) == 2
    assert "exists" in capsys.readouterr().err and mine.read_text() == "someone's labels"
    everything = tmp_path / "all.csv"
    assert main([str(tmp_path / "audit.jsonl"), "--labelling-sheet", str(everything), "--sample", "100"]) == 0
    assert "wrote 12 of 12 replies" in capsys.readouterr().out
    assert main([str(tmp_path / "audit.jsonl"), "--language", "yo", "--labelling-sheet", str(tmp_path / "y.csv")]) == 2
    assert "no replies in language 'yo'" in capsys.readouterr().err


def test_a_labelling_sheet_of_one_reply_is_the_smallest(tmp_path, capsys):
    _audit(tmp_path / "audit.jsonl")
    assert main([str(tmp_path / "audit.jsonl"), "--labelling-sheet", str(tmp_path / "one.csv"), "--sample", "1"]) == 0
    assert "wrote 1 of 12 replies" in capsys.readouterr().out
    assert main([str(tmp_path / "audit.jsonl"), "--labelling-sheet", str(tmp_path / "none.csv"), "--sample", "0"]) == 2
    assert "--sample must be at least 1" in capsys.readouterr().err and not (tmp_path / "none.csv").exists()
