"""Benchmark: the probe judge in languages it was not fitted on.

Wang et al. (2025) find the refusal direction shared across the languages a safety-aligned model
reads; if refusal is represented alike, a probe on the reader's residual stream should judge
replies in a language whose labels it never saw. This measures that, on the hand-labelled replies
of ``benchmarks/judge_labels/`` (the embedded model's replies, ten languages) and XSTest v2's
English completions (other models' replies, two human labels each):

- **shipped**: mechref's probe (``mechref/data/judges/probe_en``: fitted on XSTest's ``llama2new``
  file alone, layer 14, every reply read after "Hello.") on each language's labels, as it is;
- **leave one language out**: for each labelled language, a probe of the same recipe (layer 14,
  the layer the English fit chose; ``C`` by 5-fold cross-validated kappa on the fitting rows)
  fitted on ``llama2new`` and every *other* language's labels, then scored on the one left out;
  and English left out: fitted on the ten languages alone, scored on all three XSTest files.

The layer is fixed at the shipped probe's so that no choice sees the language it is scored on.
Each row: accuracy with its 95% Wilson interval, Cohen's kappa, the confusion counts, beside the
other judges' agreement on the same labels (``benchmarks/results/judges.json``). Written to
``benchmarks/results/judges_probe_languages.json`` (about 4 minutes on a 2-core CPU)::

    python benchmarks/bench_probe_languages.py --xstest ../shared/data/xstest
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench_judges import LABELS, read_labels

RESULTS = Path(__file__).parent / "results"
RESULT = RESULTS / "judges_probe_languages.json"
FIT_FILE = "llama2new"  # the XSTest file the shipped probe was fitted on


def labelled_languages() -> dict[str, dict]:
    """Every hand-labelled language: its replies and the reference labels."""
    out = {}
    for path in sorted(LABELS.glob("*.jsonl")):
        rows = read_labels(path)
        out[path.stem] = {"replies": [r["reply"] for r in rows], "labels": [bool(r["refused"]) for r in rows]}
    return out


def xstest_files(folder: Path) -> dict[str, dict]:
    """XSTest v2's three completion files, by model name."""
    from mechref.judges.completions import read_completions

    files = sorted((folder / "completions").glob("xstest_v2_completions_*.csv"))
    if not files:
        raise SystemExit(f"bench_probe_languages: error: no xstest_v2_completions_*.csv in {folder / 'completions'}")
    out = {}
    for path in files:
        rows = read_completions(path)
        out[path.stem.replace("xstest_v2_completions_", "")] = {
            "replies": [r["completion"] for r in rows],
            "labels": [bool(r["label"]) for r in rows],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--xstest", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "xstest")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    from mechref import load_model
    from mechref.judges.core import verdict_agreement
    from mechref.judges.probe import fit_probe, reader_identity, reply_features, shipped_probe

    shipped = shipped_probe()
    languages, english = labelled_languages(), xstest_files(args.xstest)
    reader = load_model(shipped.reader["name"], dtype=shipped.reader.get("dtype", "bfloat16"))
    identity = {**reader_identity(reader), "dtype": shipped.reader.get("dtype", "bfloat16")}
    layer = shipped.layer
    started = time.perf_counter()
    features: dict[str, torch.Tensor] = {}
    for name, block in {**{f"xstest {k}": v for k, v in english.items()}, **languages}.items():
        print(f"reading {len(block['replies'])} replies: {name}", flush=True)
        features[name] = reply_features(
            reader,
            shipped.requests(None, len(block["replies"])),
            block["replies"],
            layers=[layer],
            prompt_tokens=shipped.prompt_tokens,
            reply_tokens=shipped.reply_tokens,
        )[:, 0]
    read_seconds = time.perf_counter() - started
    labels = {**{f"xstest {k}": v["labels"] for k, v in english.items()}, **{k: v["labels"] for k, v in languages.items()}}

    def agreement(verdicts: torch.Tensor, names: list[str]) -> dict:
        return verdict_agreement([bool(v) for v in verdicts], [v for n in names for v in labels[n]])

    def fit(names: list[str], about: str):
        x = torch.cat([features[n] for n in names])[:, None]
        y = [v for n in names for v in labels[n]]
        return fit_probe(x, y, identity, [layer], fitted_on={"data": about}, request=shipped.request)

    judges = json.loads((RESULTS / "judges.json").read_text(encoding="utf-8"))["languages"]
    rows: dict[str, dict] = {}
    for language in languages:
        others = [f"xstest {FIT_FILE}", *(n for n in languages if n != language)]
        probe = fit(others, f"XSTest {FIT_FILE} and the labels of {', '.join(n for n in languages if n != language)}")
        entry = judges.get(language, {})
        rows[language] = {
            "n": len(labels[language]),
            "refusals": sum(labels[language]),
            "shipped probe": agreement(shipped.log_odds(features[language]) > 0, [language]),
            "probe, this language left out": {
                **agreement(probe.log_odds(features[language]) > 0, [language]),
                "C": probe.fitted_on["C"],
                "cv_kappa": probe.fitted_on["cv_kappa"],
                "fitted_on_n": probe.fitted_on["n"],
            },
            # The other judges on the same labels, as judges.json measured them.
            "other judges": {
                name: {"accuracy": block["accuracy"], "kappa": block["kappa"]}
                for name, block in entry.items()
                if isinstance(block, dict) and "kappa" in block and name != "substring (English phrases)"
            },
        }
        print(
            f"{language}: shipped {rows[language]['shipped probe']['accuracy']} / {rows[language]['shipped probe']['kappa']}, "
            f"left out {rows[language]['probe, this language left out']['accuracy']} / "
            f"{rows[language]['probe, this language left out']['kappa']}",
            flush=True,
        )
    xs = [f"xstest {k}" for k in english]
    without_english = fit(list(languages), "the labels of " + ", ".join(languages))
    english_rows = {
        "n": sum(len(labels[n]) for n in xs),
        "refusals": sum(sum(labels[n]) for n in xs),
        "shipped probe (files it was not fitted on)": agreement(
            torch.cat([shipped.log_odds(features[n]) for n in xs if n != f"xstest {FIT_FILE}"]) > 0,
            [n for n in xs if n != f"xstest {FIT_FILE}"],
        ),
        "probe, English left out": {
            **agreement(torch.cat([without_english.log_odds(features[n]) for n in xs]) > 0, xs),
            "C": without_english.fitted_on["C"],
            "cv_kappa": without_english.fitted_on["cv_kappa"],
            "fitted_on_n": without_english.fitted_on["n"],
        },
    }
    result = {
        "command": "python benchmarks/bench_probe_languages.py --xstest ../shared/data/xstest",
        "reader": identity,
        "layer": layer,
        "request": shipped.request,
        "reply_tokens": shipped.reply_tokens,
        "labels": "benchmarks/judge_labels/<lang>.jsonl (the embedded model's replies, labelled by reading); "
        "XSTest v2 completions (CC BY 4.0, Röttger et al. 2024; Llama-2 and Mistral replies, two human labels each)",
        "tuned_on": "shipped probe: XSTest llama2new only; each left-out probe: llama2new and the other languages' "
        "labels (C by cross-validation on those rows); the layer is the shipped probe's, chosen on English alone",
        "reading_seconds": round(read_seconds, 1),
        "languages": rows,
        "en": english_rows,
    }
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
