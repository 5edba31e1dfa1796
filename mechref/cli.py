"""The ``mechref`` command line (``mechref --help``, ``python -m mechref --help``): model info, the
cross-run report, and every analysis by name (each is ``python -m mechref.analyses.<name>``)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from mechref.analyses.command import ArgumentParser, guarded
from mechref.framework.settings import add_arguments, resolve
from mechref.model.embedded import EMBEDDED_MODELS
from mechref.model.settings import ModelSettings

#: The analysis commands, by name, with the line ``mechref --help`` shows for each.
ANALYSES = {
    "quickstart": "load, chat, capture a refusal direction, ablate and add it (a few minutes on CPU)",
    "refusal_direction": "find, select, test and remove the refusal direction (Arditi et al. 2024)",
    "suffix_hijack": "how an adversarial suffix suppresses the refusal direction by moving attention",
    "gcg": "search an adversarial suffix with GCG and write it with its provenance",
    "multilingual": "refusal across languages: audit, cosine parallelism, transfer, silhouette, PCA (Wang et al. 2025)",
    "categories": "refusal per harm category: category directions, cross-category transfer, refusal subspaces",
    "damage": "what an edit breaks: over-refusal (XSTest), KL and cross-entropy, GSM8K, against the unedited model",
    "optimize_edit": "search edits (direction layer, per-layer strengths) for the front of refusal against KL (Optuna)",
    "export": "write the edit as a transformers folder, LoRA adapter, GGUF and llama.cpp control vector, each verified",
    "judge": "label a file of replies with a refusal judge; agreement with labels where the file has them",
}


def _model_info(args: argparse.Namespace) -> int:
    # Described, never prompted: a base model without a chat template is fine here.
    model = resolve(ModelSettings, args, None, ModelSettings(dtype="float32")).load(chat=False)
    print(json.dumps(model.info(), indent=2, ensure_ascii=False))
    return 0


def _model_list(args: argparse.Namespace) -> int:
    for model in EMBEDDED_MODELS.values():
        cached = [d for d in ("float32", "bfloat16", "float16") if (model.cached_folder(d) / "mechref_manifest.json").is_file()]
        state = f"cached ({', '.join(cached)})" if cached else "not yet cached"
        print(f"{model.name}\t{model.upstream} ({model.quantization}, {model.licence})\t{state}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from mechref.report.overview import find_runs, write_overview

    page = write_overview(args.runs_dir, args.out)
    print(f"{len(find_runs(args.runs_dir))} runs; report in {page}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``mechref`` parser: ``model info``, ``model list``, ``report`` and one sub-command per analysis."""
    parser = ArgumentParser(prog="mechref", description="Mechanistic interpretability of refusal in chat models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    model = sub.add_parser("model", help="inspect models", description="Inspect models.")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION")
    info = model_sub.add_parser("info", help="print a model's config (layers, width, heads, dtype, cache) as JSON")
    add_arguments(info, ModelSettings, ModelSettings(dtype="float32"), "model")
    info.set_defaults(func=_model_info)
    listing = model_sub.add_parser("list", help="list the embedded models and whether they are cached")
    listing.set_defaults(func=_model_list)

    report = sub.add_parser(
        "report",
        help="write one HTML page across every run folder under RUNS_DIR",
        description="Write one HTML page across every mechref run folder under RUNS_DIR: what each run is, its key "
        "numbers with counts and intervals, a preview and links to its report and files.",
    )
    report.add_argument("runs_dir", metavar="RUNS_DIR", type=Path, help="the folder that holds the run folders")
    report.add_argument("--out", type=Path, default=None, help="the page to write (default: RUNS_DIR/mechref-report.html)")
    report.set_defaults(func=_report)

    for name, help_text in ANALYSES.items():
        command = sub.add_parser(name, help=help_text, add_help=False)
        command.add_argument("rest", nargs=argparse.REMAINDER)
        command.set_defaults(func=lambda a, name=name: _run_analysis(name, a.rest))
    return parser


def _run_analysis(name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(f"mechref.analyses.{name}")
    return int(module.main(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mechref`` on ``argv`` (default: the process's arguments); the exit code. An analysis name goes
    straight to that analysis's own command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ANALYSES:
        # Straight to the analysis's own parser: argparse's REMAINDER does not take a first
        # argument that starts with "-", so `mechref damage --help` would be refused here.
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return _run_analysis(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    return guarded(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
