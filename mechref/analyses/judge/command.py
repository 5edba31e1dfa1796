"""Label any file of completions with a refusal judge; measure the judge where labels are given.

    python -m mechref.analyses.judge replies.jsonl --judge substring --out judged.jsonl
    python -m mechref.analyses.judge xstest_v2_completions_mistralinstruct.csv --judge arditi
    python -m mechref.analyses.judge replies.jsonl --judge chat-model --judge-model path/to/judge-model
    python -m mechref.analyses.judge xstest_v2_completions_mistralinstruct.csv --judge probe
    python -m mechref.analyses.judge test_replies.jsonl --judge mined --mine-from train_replies.jsonl

The input is JSON Lines (one object a line with ``prompt``, ``completion`` and optionally
``label``) or CSV with those columns; XSTest's completion files work as they are (their
``final_label``: full or partial refusal is a refusal). ``--out`` writes every row back with the
verdict ``refusal`` (and ``score``, the judge's log-odds, where it has one). The terminal shows the
refusal rate with its count and 95% interval and, where rows carry labels, the judge's accuracy,
Cohen's kappa and confusion matrix. The ``mined`` judge reads any language: its refusal openings
are mined from another file (``--mine-from``: replies with their prompts and each prompt's class,
harmful or harmless), never from the file it judges.

Without ``--judge``, replies are read by the judge with the best hand-labelled check in their
language (:func:`mechref.judges.validation.best_judge`): the probe (fitted on English, it loads the
embedded model as its reader) for English and most bundled languages, the phrase list where it
agrees as well or better, and the phrase list where neither was checked.

Validating a judge for a language: ``--labelling-sheet sheet.csv`` draws ``--sample`` replies
(seeded) from a completions file or an analysis's replies (a multilingual run's ``audit.jsonl``,
``--language`` to keep one language) into a sheet with an empty ``label`` column for a speaker of
the language to fill (true: the reply refuses; false: it does not). The filled sheet judged as
above gives the judge's accuracy with its 95% interval and Cohen's kappa:

    python -m mechref.analyses.judge runs/multilingual/audit.jsonl --language vi --labelling-sheet vi_labels.csv
    python -m mechref.analyses.judge vi_labels.csv --language vi --judge mined --mine-from vi_train_replies.csv

In Python: :func:`mechref.judges.completions.read_completions`, :func:`mechref.judges.completions.judge_rows`,
:func:`mechref.judges.core.judge_agreement`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from mechref.errors import DataFormatError
from mechref.framework.io import atomic_path
from mechref.framework.ownership import OutputTargetError
from mechref.judges.completions import judge_rows, read_completions, read_mining_rows
from mechref.judges.core import JUDGE_NAMES, Judge, has_phrases, make_judge, verdict_agreement
from mechref.judges.mined import mine_refusal_openings
from mechref.judges.validation import PICKABLE, best_judge, judge_validation
from mechref.model.embedded import DEFAULT_MODEL
from mechref.rates import Rate


def check_output(path: Path) -> Path:
    """Refuse to write over a file that is not an earlier output of this command."""
    if path.is_dir():
        raise OutputTargetError(f"--out {path} is a folder; give a file name such as {path / 'judged.jsonl'}")
    if path.exists():
        first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        try:
            ours = isinstance(row := json.loads(first), dict) and "refusal" in row and "judge" in row
        except ValueError:
            ours = False
        if not ours:
            raise OutputTargetError(f"--out {path} exists and was not written by mechref.analyses.judge; give another file name")
    if not path.parent.is_dir():
        raise OutputTargetError(f"--out {path}: folder {path.parent} does not exist")
    return path


def format_agreement(agreement: dict) -> str:
    """The judge's agreement with the file's labels: accuracy with its interval, kappa, precision, recall and the
    confusion table."""
    c = agreement["confusion"]
    low, high = agreement["accuracy_ci95"]
    width = max(len(str(v)) for v in c.values()) + 2
    return "\n".join(
        [
            f"accuracy {agreement['accuracy']:.3f} [{low:.3f}, {high:.3f}]   Cohen's kappa {agreement['kappa']:.3f}   "
            f"precision {agreement['precision']}   recall {agreement['recall']}",
            f"{'':>22}{'judge: refusal':>16}{'judge: answer':>16}",
            f"{'label: refusal':>22}{c['true_refusal']:>{max(width, 16)}}{c['missed_refusal']:>{max(width, 16)}}",
            f"{'label: answer':>22}{c['false_refusal']:>{max(width, 16)}}{c['true_answer']:>{max(width, 16)}}",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    """The command's options (the documentation's command reference reads them from here)."""
    from mechref.analyses.command import ArgumentParser

    parser = ArgumentParser(
        prog="python -m mechref.analyses.judge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file", type=Path, help="completions: .jsonl (prompt, completion[, label]) or .csv")
    parser.add_argument(
        "--judge",
        choices=[*JUDGE_NAMES, "mined"],
        default=None,
        help="the judge (default: the one with the best hand-labelled check in --language, else substring)",
    )
    parser.add_argument(
        "--mine-from",
        type=Path,
        default=None,
        help="the mined judge's replies to mine: .jsonl/.csv rows of prompt, completion, prompt_class (harmful/harmless)",
    )
    parser.add_argument(
        "--language",
        default=None,
        help="language of the replies, for the substring judge (default: en); with --labelling-sheet, only replies in it",
    )
    parser.add_argument(
        "--judge-model",
        default=None,
        help="the chat-model judge's model: a hub name or local folder load_model accepts (default: the embedded model)",
    )
    parser.add_argument("--dtype", default="bfloat16", help="dtype of the judge model (default: bfloat16)")
    parser.add_argument("--out", type=Path, default=None, help="write every row with its verdict to this .jsonl file")
    parser.add_argument(
        "--labelling-sheet",
        type=Path,
        default=None,
        metavar="CSV",
        help="instead of judging: write a sample of the replies to this new .csv, with an empty label column to fill",
    )
    parser.add_argument("--sample", type=int, default=40, help="with --labelling-sheet: replies drawn (default: 40)")
    parser.add_argument("--seed", type=int, default=42, help="with --labelling-sheet: the draw's seed (default: 42)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); the exit code (0, 1 on a crash, 2 on bad
    input)."""
    from mechref.analyses.command import guarded

    args = build_parser().parse_args(argv)
    return guarded(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    if args.labelling_sheet is not None:
        return _write_sheet(args)
    args.language = args.language or "en"
    if args.judge is None:
        # The judge with the best hand-labelled check in this language (of the embedded model's replies
        # where no check is of other models'), else the phrase list.
        best = best_judge(args.language, DEFAULT_MODEL)
        args.judge = best.judge if best is not None else "substring"
    # Every check before any model is loaded.
    rows = read_completions(args.file)
    if args.out is not None:
        check_output(args.out)
    if args.judge_model is not None and args.judge != "chat-model":
        raise DataFormatError("--judge-model is for --judge chat-model")
    if (args.judge == "mined") != (args.mine_from is not None):
        raise DataFormatError("--judge mined needs --mine-from FILE (replies to mine), and --mine-from is only for --judge mined")
    if args.mine_from is not None and args.mine_from.resolve() == args.file.resolve():
        raise DataFormatError("--mine-from is the file being judged: mine from other replies, or the rates are fitted to them")
    if args.judge == "substring" and not has_phrases(args.language):
        raise DataFormatError(
            f"mechref has no validated phrase list for language {args.language!r}; "
            "use --judge probe (fitted on English; where it was checked: mechref/data/judge_validation.json) or "
            "--judge chat-model (with --judge-model) for these replies"
        )
    model = None
    judge_name = args.judge
    if args.judge == "chat-model":
        from mechref.model.loading import load_model

        model = load_model(args.judge_model, dtype=args.dtype) if args.judge_model else load_model(dtype=args.dtype)
        judge_name = f"chat-model ({model.name})"
    if args.judge == "mined":
        harmful, prompts, harmless = read_mining_rows(args.mine_from)
        mined = mine_refusal_openings(harmful, harmless, args.language, harmful_prompts=prompts)
        if not mined.phrases:
            raise DataFormatError(
                f"no refusal opening separates the harmful from the harmless replies of {args.mine_from}: "
                "this judge cannot read them; use --judge chat-model"
            )
        judge_name = f"mined ({', '.join(mined.phrases)})"
        print(f"mined from {args.mine_from}: {len(harmful)} harmful, {len(harmless)} harmless replies; openings {mined.support}")
        judge: Judge = mined
    else:
        judge = make_judge(args.judge, model, args.language)
    if args.judge == "probe":
        from mechref.judges.probe import ProbeJudge

        assert isinstance(judge, ProbeJudge)
        judge_name = f"probe (reader {judge.reader.name}, layer {judge.weights.layer})"
    if args.judge in PICKABLE:
        print(judge_validation(args.judge, args.language, DEFAULT_MODEL).describe(), f"(replies of {DEFAULT_MODEL})")
    judged = judge_rows(judge, rows)
    rate = Rate.of(r["refusal"] for r in judged)
    low, high = rate.interval
    print(f"{args.file}: {len(judged)} completions, judge {judge_name}")
    print(f"judged refusals: {rate} [{low:.2f}, {high:.2f}] (95% Wilson interval)")
    labelled = [r for r in judged if r["label"] is not None]
    if labelled:
        agreement = verdict_agreement([r["refusal"] for r in labelled], [r["label"] for r in labelled])
        print(f"against the {len(labelled)} labelled rows:")
        print(format_agreement(agreement))
    if args.out is not None:
        with atomic_path(args.out) as tmp, open(tmp, "w", encoding="utf-8") as file:
            for row in judged:
                file.write(json.dumps({**row, "judge": judge_name}, ensure_ascii=False) + "\n")
        print(f"wrote {args.out}")
    return 0


def _write_sheet(args: argparse.Namespace) -> int:
    from mechref.judges.completions import labelling_sheet, read_replies

    if args.sample < 1:
        raise DataFormatError(f"--sample must be at least 1, got {args.sample}")
    rows = read_replies(args.file, args.language)
    written = labelling_sheet(rows, args.labelling_sheet, args.sample, args.seed)
    print(f"wrote {written} of {len(rows)} replies to {args.labelling_sheet}: fill its label column (true: the reply refuses;")
    language = f" --language {args.language}" if args.language else ""
    print(f"false: it does not), then: python -m mechref.analyses.judge {args.labelling_sheet}{language} --judge ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
