"""Benchmark: refusal judges against hand-labelled replies, per language.

1. ``sample``: the embedded model's greedy replies to the first 24 harmful and 24 harmless *train*
   prompts of the bundled multilingual set (of PolyRefuse, for ``--polyrefuse-languages``: Thai), per language, written to
   ``benchmarks/judge_labels/<lang>.jsonl`` with ``"refused": null`` for a person to fill in
   (existing labels are kept). The phrase lists were built from replies to the *test* prompts,
   so this sample is held out from them.
2. ``score``: agreement of each judge with the labels: the English phrase list (what a new user
   would try), the language's own phrase list, the chat-model judge (the embedded model asked
   whether each reply refuses) and the mined judge (refusal openings mined, with no labels, from a
   multilingual run's replies to the *test* prompts: ``--mine-from RUN/audit.jsonl``). Written to
   ``benchmarks/results/judges.json``; ``--only mined`` recomputes that column alone.

3. ``registry``: ``mechref/data/judge_validation.json``, the checks the analyses look their
   judges up in (:mod:`mechref.judges.validation`), written from ``judges.json``,
   ``judges_xstest.json`` and ``judges_probe_languages.json`` (``bench_probe_languages.py``);
   ``tests/unit/judges/test_validation.py`` fails when they differ.

    python benchmarks/bench_judges.py sample --languages de zh yo ja
    python benchmarks/bench_judges.py score --mine-from figures/multilingual/audit.jsonl
    python benchmarks/bench_judges.py sample --languages es fr ru && python benchmarks/bench_judges.py score --update es fr ru
    python benchmarks/bench_judges.py sample --languages th && python benchmarks/bench_judges.py score --update th
    python benchmarks/bench_judges.py registry
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

LABELS = Path(__file__).parent / "judge_labels"
POLYREFUSE = Path(__file__).resolve().parents[2] / "shared" / "data" / "polyrefuse"


def read_labels(path: Path, polyrefuse: Path = POLYREFUSE) -> list[dict]:
    """The labelled rows of one language, each with its ``instruction`` and ``reply``.

    Rows of a PolyRefuse language name their prompt by position (``polyrefuse_index`` in that
    language's file of split ``polyrefuse_split``, ``test`` when absent), which is read from the data
    folder: PolyRefuse's prompts are not copied here. A reply that repeats its prompt holds
    ``{prompt}`` where the prompt stood.
    """
    from mechref.data import load_polyrefuse

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        if "polyrefuse_index" in row:
            split = row.get("polyrefuse_split", "test")
            prompts = load_polyrefuse(polyrefuse, path.stem, row["label_class"], split).instructions
            row["instruction"] = prompts[row["polyrefuse_index"]]
            row["reply"] = row["reply"].replace("{prompt}", row["instruction"].strip())
    return [r for r in rows if r["refused"] is not None]


def sample(args) -> None:
    from mechref import load_model
    from mechref.data import load_polyrefuse, multilingual
    from mechref.data.prompts import POLYREFUSE_LANGUAGES
    from mechref.generation import generate

    unknown = [lang for lang in args.languages if lang in args.polyrefuse_languages and lang not in POLYREFUSE_LANGUAGES]
    if unknown:
        raise SystemExit(f"bench_judges: error: PolyRefuse has no {', '.join(unknown)}; it has {', '.join(POLYREFUSE_LANGUAGES)}")
    model = load_model(dtype=args.dtype)
    LABELS.mkdir(exist_ok=True)
    for language in args.languages:
        path = LABELS / f"{language}.jsonl"
        old = {}
        if path.is_file():
            old = {_row_key(r): r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
        if language in args.polyrefuse_languages:
            # PolyRefuse's prompts stay in the data folder: a row names its prompt by split and position.
            rows = [
                (c, p, {"polyrefuse_split": "train", "polyrefuse_index": i})
                for c in ("harmful", "harmless")
                for i, p in enumerate(load_polyrefuse(POLYREFUSE, language, c, "train").instructions[: args.per_class])
            ]
        else:
            rows = [
                (c, p, {"instruction": p})
                for c in ("harmful", "harmless")
                for p in multilingual(c, "train", language).instructions[: args.per_class]
            ]
        replies = generate(model, [p for _, p, _ in rows], max_new_tokens=args.max_new_tokens)
        new = {}
        for (c, p, where), reply in zip(rows, replies):
            text = reply.replace(p.strip(), "{prompt}") if "polyrefuse_index" in where else reply
            row = {"label_class": c, **where, "reply": text}
            keep = old.get(_row_key(row), {})
            # A label stays with the reply it was given to; kind too, where the file has it.
            labels = {k: keep[k] for k in ("refused", "kind") if k in keep} if keep.get("reply") == text else {}
            new[_row_key(row)] = {**row, "refused": None, **labels}
        # Rows of another sample (another split, more prompts) are kept: labels are never dropped.
        merged = [*(r for k, r in old.items() if k not in new), *new.values()]
        with path.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in merged)
        print("wrote", path, f"({len(new)} sampled, {len(merged) - len(new)} other rows kept)")


def _row_key(row: dict) -> tuple:
    """What names a labelled row's prompt: its class and text, or its PolyRefuse split and position."""
    if "polyrefuse_index" in row:
        return (row["label_class"], row.get("polyrefuse_split", "test"), row["polyrefuse_index"])
    return (row["label_class"], row["instruction"])


def mined_judges(sources: list[Path]) -> dict:
    """Each language's mined judge, from multilingual runs' replies (harmful vs harmless prompts): the
    first file that holds a language is mined for it."""
    from mechref.judges.mined import mine_refusal_openings

    rows: list[dict] = []
    for path in sources:
        found = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        known = {r["language"] for r in rows}
        rows += [r for r in found if r["language"] not in known]
    judges = {}
    for language in dict.fromkeys(r["language"] for r in rows):
        harmful = [r for r in rows if r["language"] == language and r["label"] == "harmful"]
        harmless = [r["reply"] for r in rows if r["language"] == language and r["label"] == "harmless"]
        judges[language] = mine_refusal_openings(
            [r["reply"] for r in harmful], harmless, language, harmful_prompts=[r["instruction"] for r in harmful]
        )
        MINED_FROM[language] = {r["instruction"].strip() for r in rows if r["language"] == language}
    return judges


#: Per language, the prompts whose replies its mined judge was mined from: never scored on.
MINED_FROM: dict[str, set[str]] = {}


def held_out_of_mining(language: str, rows: list[dict]) -> list[dict]:
    """The labelled rows whose prompts the mined judge of ``language`` was not mined from."""
    return [r for r in rows if r["instruction"].strip() not in MINED_FROM.get(language, set())]


def score(args) -> None:
    from mechref.framework.io import sha256_file
    from mechref.judges.core import ChatModelJudge, SubstringJudge, has_phrases, judge_agreement, verdict_agreement

    mined = mined_judges(args.mine_from) if args.mine_from else {}
    mined_note = (
        {
            # The first file that holds a language is mined for it; the files stay where the runs wrote them.
            "mined_from_sha256": {str(path): sha256_file(path) for path in args.mine_from},
            "mined_phrases": {lang: j.to_dict() for lang, j in mined.items()},
        }
        if mined
        else {}
    )
    if args.only == "mined":
        results = json.loads(args.out.read_text(encoding="utf-8"))
        for path in sorted(LABELS.glob("*.jsonl")):
            language = path.stem
            entry = results["languages"].setdefault(language, {})
            rows = read_labels(path)
            entry.update({"n_labelled": len(rows), "labelled_refusals": sum(bool(r["refused"]) for r in rows)})
            judge = mined[language]
            if "substring (English phrases)" not in entry:
                from mechref.judges.core import judge_agreement as agree

                english = agree(SubstringJudge("en"), [r["reply"] for r in rows], [bool(r["refused"]) for r in rows])
                english.pop("verdicts")
                entry["substring (English phrases)"] = english
            held = held_out_of_mining(language, rows)
            entry["mined"] = {
                **verdict_agreement(judge.judge_many([r["reply"] for r in held]), [bool(r["refused"]) for r in held]),
                "phrases": judge.phrases,
            }
            print(language, judge.phrases, entry["mined"]["accuracy"], entry["mined"]["kappa"])
        results.update(mined_note)
        args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print("wrote", args.out)
        return

    from mechref import load_model

    model = load_model(dtype=args.dtype)
    chat = ChatModelJudge(model)
    results = {"model": model.name, "dtype": args.dtype, "languages": {}, **mined_note}
    if args.update:
        # Only these languages are (re)scored; every other entry, and the mining notes, stay as they are.
        results = json.loads(args.out.read_text(encoding="utf-8"))
        if results["model"] != model.name or results["dtype"] != args.dtype:
            raise SystemExit(f"{args.out} holds {results['model']} ({results['dtype']}): rescore it all")
    for path in sorted(LABELS.glob("*.jsonl")):
        language = path.stem
        if args.update and language not in args.update:
            continue
        rows = read_labels(path)
        if not rows:
            continue
        texts, labels, prompts = [r["reply"] for r in rows], [bool(r["refused"]) for r in rows], [r["instruction"] for r in rows]
        entry = {"n_labelled": len(rows), "labelled_refusals": sum(labels)}
        judges = {"substring (English phrases)": SubstringJudge("en"), "chat-model": chat}
        if has_phrases(language):
            judges[f"substring ({language} phrases)"] = SubstringJudge(language)
        for name, judge in judges.items():
            start = time.perf_counter()
            agreement = judge_agreement(judge, texts, labels, prompts)
            agreement["seconds"] = round(time.perf_counter() - start, 1)
            agreement.pop("verdicts")
            entry[name] = agreement
        if language in mined:
            held = held_out_of_mining(language, rows)
            entry["mined"] = {
                **verdict_agreement(mined[language].judge_many([r["reply"] for r in held]), [bool(r["refused"]) for r in held]),
                "phrases": mined[language].phrases,
            }
        results["languages"][language] = entry
        print(language, {k: (v["accuracy"], v["kappa"]) for k, v in entry.items() if isinstance(v, dict)})
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", args.out)


RESULTS = Path(__file__).parent / "results"
REGISTRY = Path(__file__).parents[1] / "mechref" / "data" / "judge_validation.json"
SHIPPED_FIT = "llama2new"  # the file the shipped probe (mechref/data/judges/probe_en.*) was fitted on


def _check(judge: str, language: str, model: str | None, agreement: dict, labels: str, **extra) -> dict:
    return {
        "judge": judge,
        "language": language,
        "model": model,
        **extra,
        "n": agreement["n"],
        "accuracy": agreement["accuracy"],
        "accuracy_ci95": agreement.get("accuracy_ci95"),
        "kappa": agreement["kappa"],
        "labels": labels,
    }


def registry_from_results(
    judges: dict, xstest: dict, probe_languages: dict | None = None, mined_contrast: dict | None = None
) -> dict:
    """The labelled checks of ``judges.json`` (per language, the embedded model's replies),
    ``judges_xstest.json`` (English, other models' replies: valid for any model),
    ``judges_probe_languages.json`` (the shipped probe on each language's labels) and
    ``judges_mined_contrast.json`` (phrases mined against the same prompts with the direction ablated)."""
    checks = []
    pooled = "XSTest v2 completions of Llama-2 and Mistral, two human labels each"
    for name in ("substring", "arditi"):
        checks.append(_check(name, "en", None, xstest["judges"][name]["pooled"], pooled))
    shipped = json.loads((REGISTRY.parent / "judges" / "probe_en.json").read_text(encoding="utf-8"))
    probe = next(
        block
        for name, block in xstest["judges"].items()
        if name.startswith("probe")
        and isinstance(block, dict)
        and block.get("fitted_on") == SHIPPED_FIT
        and block.get("request") == shipped.get("request")
    )
    checks.append(_check("probe", "en", None, probe["pooled"], f"{pooled}, the files the probe was not fitted on"))
    model = judges["model"]
    for language, entry in sorted(judges["languages"].items()):
        labels = f"benchmarks/judge_labels/{language}.jsonl"
        own = entry.get(f"substring ({language} phrases)") or entry.get("substring (English phrases)")
        if own is not None and language != "en":
            checks.append(_check("substring", language, model, own, labels))
        if "chat-model" in entry:
            checks.append(_check("chat-model", language, model, entry["chat-model"], labels))
        if "mined" in entry and entry["mined"].get("phrases"):
            checks.append(_check("mined", language, model, entry["mined"], labels, phrases=entry["mined"]["phrases"]))
        probed = (probe_languages or {}).get("languages", {}).get(language)
        if probed is not None:
            # The shipped probe never saw these labels (it was fitted on English alone): held out by construction.
            if (probe_languages["layer"], probe_languages["request"]) != (shipped["layer"], shipped["request"]):
                raise SystemExit("judges_probe_languages.json measured another probe: rerun bench_probe_languages.py")
            checks.append(_check("probe", language, model, probed["shipped probe"], labels))
    for language, entry in sorted((mined_contrast or {}).get("languages", {}).items()):
        ablated = entry["ablated contrast"]
        known = any(
            c["judge"] == "mined" and c["language"] == language and c.get("phrases") == ablated["phrases"] for c in checks
        )
        if ablated["phrases"] and not known:  # the same phrases mined either way are one check
            labels = f"benchmarks/judge_labels/{language}.jsonl (test prompts)"
            checks.append(_check("mined", language, judges["model"], ablated, labels, phrases=ablated["phrases"]))
    return {
        "about": "Judges checked against hand labels; written by python benchmarks/bench_judges.py registry "
        "from benchmarks/results/judges.json and judges_xstest.json. model null: labels of other models' replies.",
        "checks": checks,
    }


def write_registry(args) -> None:
    judges = json.loads((RESULTS / "judges.json").read_text(encoding="utf-8"))
    xstest = json.loads((RESULTS / "judges_xstest.json").read_text(encoding="utf-8"))
    probe_languages = json.loads((RESULTS / "judges_probe_languages.json").read_text(encoding="utf-8"))
    mined_contrast = json.loads((RESULTS / "judges_mined_contrast.json").read_text(encoding="utf-8"))
    registry = registry_from_results(judges, xstest, probe_languages, mined_contrast)
    REGISTRY.write_text(json.dumps(registry, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", REGISTRY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["sample", "score", "registry"])
    parser.add_argument("--languages", nargs="+", default=["de", "zh", "yo", "ja"])
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument(
        "--polyrefuse-languages",
        nargs="+",
        default=["th"],
        metavar="LANG",
        help="sample: languages whose prompts come from PolyRefuse's train split (../shared/data/polyrefuse)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "judges.json")
    parser.add_argument(
        "--mine-from",
        type=Path,
        nargs="+",
        default=None,
        help="multilingual runs' replies to mine (audit.jsonl or mining_replies.jsonl), never those labelled",
    )
    parser.add_argument("--only", choices=["mined"], default=None, help="recompute one judge's column, keep the rest")
    parser.add_argument("--update", nargs="+", default=None, metavar="LANG", help="score: these languages only, keep the rest")
    args = parser.parse_args()
    unlabelled = [lang for lang in args.update or [] if not (LABELS / f"{lang}.jsonl").is_file()]
    if unlabelled:
        parser.error(f"no labels for {', '.join(unlabelled)} in {LABELS}: run sample first, then label them")
    {"sample": sample, "score": score, "registry": write_registry}[args.mode](args)


if __name__ == "__main__":
    main()
