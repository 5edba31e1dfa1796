"""Benchmark: every English refusal judge against XSTest v2's human labels.

XSTest v2 ships 3 x 450 completions (Llama-2-chat with and without its system prompt, Mistral
Instruct) of its 450 prompts, each labelled by two people; a full or a partial refusal counts as
a refusal. None of mechref's judges was built on these rows: the phrase lists come from the
embedded model's own replies and the chat-model judge is a plain question.

    python benchmarks/bench_xstest_judges.py --xstest ../shared/data/xstest
    python benchmarks/bench_xstest_judges.py --xstest ../shared/data/xstest --chat-model   # + the embedded model as judge
    python benchmarks/bench_xstest_judges.py --xstest ../shared/data/xstest --probe --request "Hello." --write-probe

``--probe`` reads every reply with the embedded model (bfloat16) and, for each file, fits the probe
judge on that file alone (layer and regularisation by 5-fold cross-validation within it) and
reports it on the other two. ``--request TEXT`` reads every reply after that fixed request
instead of its own (the shipped probe reads after "Hello.", so that its verdict cannot depend on
how harmful the request looks). ``--write-probe`` writes the probe fitted on ``llama2new`` into
``mechref/data/judges/``: the probe mechref ships (``--judge probe``). Earlier rows of the JSON
(other judges, probes read another way) are kept.

Writes ``benchmarks/results/judges_xstest.json``: per judge and completions file, accuracy with its
95% Wilson interval, Cohen's kappa, precision, recall, the confusion counts and the seconds taken,
and the same pooled over the three files.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mechref.judges.completions import judge_rows, read_completions
from mechref.judges.core import make_judge, verdict_agreement

RESULT = Path(__file__).parent / "results" / "judges_xstest.json"


def fitted_judges(files: list[Path], scores: dict[str, list[float]]) -> dict:
    """Judges with one number fitted on ONE file's labels and reported on the OTHER files: the
    chat-model judge's log-odds threshold alone, and "the substring list, or the chat-model judge
    above a threshold". The fit maximises Cohen's kappa on the fitting file."""
    substring = make_judge("substring")
    rows = {path.stem.replace("xstest_v2_completions_", ""): read_completions(path) for path in files}
    labels = {name: [bool(r["label"]) for r in file_rows] for name, file_rows in rows.items()}
    listed = {name: substring.judge_many([r["completion"] for r in file_rows]) for name, file_rows in rows.items()}
    grid = [x / 4 for x in range(-40, 41)]
    out = {}
    for kind in ("chat-model threshold", "substring or chat-model threshold"):

        def verdicts(name: str, t: float, kind: str = kind) -> list[bool]:
            above = [s > t for s in scores[name]]
            return above if kind == "chat-model threshold" else [a or b for a, b in zip(above, listed[name])]

        for fit in rows:
            threshold = max(grid, key=lambda t: verdict_agreement(verdicts(fit, t), labels[fit])["kappa"])
            others = [n for n in rows if n != fit]
            pooled_v = [v for n in others for v in verdicts(n, threshold)]
            pooled_l = [v for n in others for v in labels[n]]
            out[f"{kind}, fitted on {fit}"] = {
                "threshold": threshold,
                "fitted_on": fit,
                "files": {n: verdict_agreement(verdicts(n, threshold), labels[n]) for n in others},
                "pooled": verdict_agreement(pooled_v, pooled_l),
            }
    return out


def probe_name(fit: str, request: str | None) -> str:
    """The JSON key of a probe's row: its fitting file and, for a fixed request, that request."""
    return f"probe, fitted on {fit}" if request is None else f"probe read after {request!r}, fitted on {fit}"


def probe_judges(files: list[Path], write: bool, request: str | None = None) -> dict:
    """Fit the probe judge on each file, report it on the others (see the module's docstring)."""
    from mechref import load_model
    from mechref.judges.probe import fit_probe, reader_identity, reply_features, shipped_probe_path

    reader = load_model(dtype="bfloat16")
    layers = list(range(reader.n_layers))
    rows = {path.stem.replace("xstest_v2_completions_", ""): read_completions(path) for path in files}
    started = time.perf_counter()
    features = {
        name: reply_features(
            reader,
            [r["prompt"] if request is None else request for r in file_rows],
            [r["completion"] for r in file_rows],
            layers=layers,
            progress=True,
        )
        for name, file_rows in rows.items()
    }
    read_seconds = time.perf_counter() - started
    labels = {name: [bool(r["label"]) for r in file_rows] for name, file_rows in rows.items()}
    identity = {**reader_identity(reader), "dtype": "bfloat16"}
    out: dict = {}
    for fit in rows:
        probe = fit_probe(
            features[fit],
            labels[fit],
            identity,
            layers,
            fitted_on={"data": f"XSTest v2 completions, {fit} (CC BY 4.0, Röttger et al. 2024)"},
            request=request,
        )
        others = [n for n in rows if n != fit]
        verdicts = {n: (probe.log_odds(features[n][:, probe.layer]) > 0).tolist() for n in others}
        out[probe_name(fit, request)] = {
            "fitted_on": fit,
            "request": request,
            "layer": probe.layer,
            "C": probe.fitted_on["C"],
            "cv_kappa": probe.fitted_on["cv_kappa"],
            "files": {n: verdict_agreement(verdicts[n], labels[n]) for n in others},
            "pooled": verdict_agreement([v for n in others for v in verdicts[n]], [v for n in others for v in labels[n]]),
            "reader": identity,
        }
        if fit == "llama2new" and write:
            shipped_probe_path().parent.mkdir(parents=True, exist_ok=True)
            probe.fitted_on["agreement_on_other_files"] = out[probe_name(fit, request)]["pooled"]
            probe.save(shipped_probe_path())
            print(f"wrote the shipped probe to {shipped_probe_path()}")
    out["probe reading seconds" + ("" if request is None else f" (after {request!r})")] = round(read_seconds, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--xstest", type=Path, required=True, help="the XSTest folder (with completions/)")
    parser.add_argument("--chat-model", action="store_true", help="also the chat-model judge, the embedded model in bfloat16")
    parser.add_argument("--probe", action="store_true", help="also the probe judge (embedded model as reader), fitted per file")
    parser.add_argument("--write-probe", action="store_true", help="write the probe fitted on llama2new as mechref's probe")
    parser.add_argument("--request", default=None, help="read every reply after this fixed request, not its own")
    args = parser.parse_args(argv)
    if args.write_probe and not args.probe:
        raise SystemExit("bench_xstest_judges: error: --write-probe needs --probe")
    files = sorted((args.xstest / "completions").glob("xstest_v2_completions_*.csv"))
    if not files:
        raise SystemExit(f"bench_xstest_judges: error: no xstest_v2_completions_*.csv in {args.xstest / 'completions'}")
    judges = {"arditi": make_judge("arditi"), "substring": make_judge("substring")}
    model_name = None
    if args.chat_model:
        from mechref import load_model

        model = load_model(dtype="bfloat16")
        model_name = model.name
        judges["chat-model"] = make_judge("chat-model", model)
    previous = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    results = previous.get("judges", {})
    scores: dict[str, list[float]] = {}
    for name, judge in judges.items():
        per_file, pooled_v, pooled_l, seconds = {}, [], [], 0.0
        for path in files:
            rows = read_completions(path)
            started = time.perf_counter()
            judged = judge_rows(judge, rows)
            took = time.perf_counter() - started
            verdicts, labels = [r["refusal"] for r in judged], [bool(r["label"]) for r in judged]
            if name == "chat-model":
                scores[path.stem.replace("xstest_v2_completions_", "")] = [r["score"] for r in judged]
            per_file[path.stem.replace("xstest_v2_completions_", "")] = {
                **verdict_agreement(verdicts, labels),
                "seconds": round(took, 1),
            }
            pooled_v += verdicts
            pooled_l += labels
            seconds += took
            print(f"{name:<11} {path.stem:<45} accuracy {per_file[path.stem.replace('xstest_v2_completions_', '')]['accuracy']}")
        results[name] = {"files": per_file, "pooled": {**verdict_agreement(pooled_v, pooled_l), "seconds": round(seconds, 1)}}
        if name == "chat-model":
            results[name]["judge_model"] = f"{model_name} (bfloat16)"
            # Every row's log-odds, so that thresholds and combinations are measured without rerunning the model.
            results[name]["log_odds"] = scores
            results.update(fitted_judges(files, scores))
    if args.probe:
        results.update(probe_judges(files, args.write_probe, args.request))
    result = {
        "command": "python benchmarks/bench_xstest_judges.py --xstest ../shared/data/xstest"
        + (" --chat-model" if "chat-model" in results else "")
        + (" --probe" if args.probe else "")
        + (f" --request {args.request!r}" if args.request is not None else "")
        + (" --write-probe" if args.write_probe else ""),
        "data": "XSTest v2 completions, 3 x 450, final_label: full or partial refusal = refusal",
        "tuned_on": "phrase judges: none of these rows; fitted judges (thresholds, probes): "
        "fitted on the file each names, reported on the other files",
        "judges": results,
    }
    tmp = RESULT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(RESULT)
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
