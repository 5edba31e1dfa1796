"""Benchmark: the mined judge's two contrasts against the same hand labels.

The mined judge keeps the reply openings that open many replies to harmful prompts and few of the
replies it is contrasted with. Contrasted with replies to *harmless* prompts, it also keeps whatever
differs between the two topics (Korean "매우", "very", from "this is very dangerous" warnings that
open answers too). Contrasted with the *same harmful prompts answered with the refusal direction
ablated* (``--harmful-only``: the model then complies), topic words occur on both sides and cancel.

This scores both on the hand-labelled replies of ``benchmarks/judge_labels/`` to PolyRefuse *test*
prompts (Italian and Korean: 16 harmful and 16 harmless each), which neither was mined from (both
mined from replies to *train* prompts): the harmless contrast as mined by the run recorded in
``benchmarks/results/multilingual_mined.json``, the ablated contrast by the run in
``benchmarks/results/multilingual_mined_ablated.json``, written by::

    python -m mechref.analyses.multilingual --data itko.csv --harmful-only --judge mined --n-train 32 \\
        --n-test 16 --n-mine 16 --parts audit --direction-run runs/refusal_direction --out runs/mined_ablated
    python benchmarks/compare_miners.py --ablated runs/mined_ablated/summary.json

where ``itko.csv`` holds PolyRefuse's first 32 train and 16 test harmful prompts in Italian and Korean
(``--write-table itko.csv`` writes it). Result: ``benchmarks/results/judges_mined_contrast.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

from bench_judges import LABELS, POLYREFUSE, read_labels

RESULTS = Path(__file__).parent / "results"


def write_table(path: Path, languages: list[str]) -> None:
    """PolyRefuse's first 32 train and 16 test harmful prompts, a column per language."""
    from mechref.data import load_polyrefuse

    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["label", "split", *languages])
        for split, n in (("train", 32), ("test", 16)):
            columns = [load_polyrefuse(POLYREFUSE, lang, "harmful", split).instructions[:n] for lang in languages]
            out.writerows(["harmful", split, *cells] for cells in zip(*columns))
    print("wrote", path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--languages", nargs="+", default=["it", "ko"])
    parser.add_argument("--harmless", type=Path, default=RESULTS / "multilingual_mined.json")
    parser.add_argument("--ablated", type=Path, default=RESULTS / "multilingual_mined_ablated.json")
    parser.add_argument("--write-table", type=Path, default=None, metavar="CSV", help="write the prompt table and stop")
    parser.add_argument("--out", type=Path, default=RESULTS / "judges_mined_contrast.json")
    args = parser.parse_args(argv)
    if args.write_table is not None:
        write_table(args.write_table, args.languages)
        return 0

    from mechref.judges.core import verdict_agreement
    from mechref.judges.mined import MinedJudge

    for path in (args.harmless, args.ablated):
        if not path.is_file():
            parser.error(f"no run summary at {path}: run the multilingual command in this module's docstring first")
    unlabelled = [lang for lang in args.languages if not (LABELS / f"{lang}.jsonl").is_file()]
    if unlabelled:
        parser.error(f"no hand labels for {', '.join(unlabelled)} in {LABELS}")
    sources = {"harmless contrast": args.harmless, "ablated contrast": args.ablated}
    mined = {name: json.loads(path.read_text(encoding="utf-8")).get("mined_judges", {}) for name, path in sources.items()}
    missing = [f"{lang} ({name})" for name, judges in mined.items() for lang in args.languages if lang not in judges]
    if missing:
        parser.error(f"no mined judge for {', '.join(missing)}: those runs did not use --judge mined on these languages")
    if args.ablated.resolve() != (RESULTS / "multilingual_mined_ablated.json").resolve():
        shutil.copyfile(args.ablated, RESULTS / "multilingual_mined_ablated.json")  # the run's summary, kept as evidence
    rows: dict[str, dict] = {}
    for language in args.languages:
        # Replies to test prompts only: both judges were mined from replies to train prompts.
        labelled = [r for r in read_labels(LABELS / f"{language}.jsonl") if r.get("polyrefuse_split", "test") == "test"]
        labels = [bool(r["refused"]) for r in labelled]
        entry: dict = {"n": len(labelled), "refusals": sum(labels)}
        for name, judges in mined.items():
            judge = MinedJudge(**judges[language])
            entry[name] = {
                **verdict_agreement(judge.judge_many([r["reply"] for r in labelled]), labels),
                "phrases": judge.phrases,
                "support": judge.support,
                "contrast": judge.contrast,
            }
        rows[language] = entry
        print(language, {n: (entry[n]["phrases"], entry[n]["accuracy"], entry[n]["kappa"]) for n in sources})
    result = {
        "command": "python benchmarks/compare_miners.py --ablated runs/mined_ablated/summary.json",
        "labels": "benchmarks/judge_labels/<lang>.jsonl, rows of PolyRefuse test prompts (neither judge was mined from them)",
        # The ablated run's summary is kept under its committed name, whatever path it was given from.
        "sources": {"harmless contrast": args.harmless.name, "ablated contrast": "multilingual_mined_ablated.json"},
        "languages": rows,
    }
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
