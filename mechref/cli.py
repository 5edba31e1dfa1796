"""The ``mechref`` command line: ``mechref --help``, ``python -m mechref --help``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

ANALYSES = {
    "quickstart": "load, chat, capture a refusal direction, ablate and add it (a few minutes on CPU)",
    "refusal_direction": "find, select, test and remove the refusal direction (Arditi et al. 2024)",
    "suffix_hijack": "how an adversarial suffix suppresses the refusal direction by moving attention",
    "multilingual": "refusal across languages: audit, cosine parallelism, transfer, silhouette, PCA (Wang et al. 2025)",
    "cosine_parallelism": "cosine similarity of per-language refusal vectors",
    "silhouette": "silhouette scores and PCA of harmful vs harmless activations per language",
}


def add_model_arguments(parser: argparse.ArgumentParser, default_dtype: str = "float32") -> None:
    """The model options every mechref command shares."""
    from mechref.embedded import DEFAULT_MODEL

    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                       help=f"embedded model name (default {DEFAULT_MODEL}), local HF folder, local .gguf, or hub id")
    group.add_argument("--dtype", default=default_dtype, choices=["float32", "bfloat16", "float16"],
                       help=f"weights dtype (default {default_dtype}; bfloat16 is 3x faster on CPUs with bf16 support, slightly less exact)")
    group.add_argument("--device", default="cpu", help="torch device (default cpu)")
    group.add_argument("--system-prompt", default=None, help="system prompt for every chat (default: the template's own)")


def add_direction_arguments(parser: argparse.ArgumentParser, note: str = "") -> None:
    """Where an analysis finds the refusal direction: a file, or a refusal-direction run folder."""
    from pathlib import Path

    group = parser.add_argument_group("refusal direction" + note)
    group.add_argument("--direction", type=Path, default=None, metavar="FILE",
                       help="direction.safetensors from the refusal-direction analysis (or its folder)")
    group.add_argument("--direction-run", type=Path, default=Path("runs/refusal_direction"), metavar="DIR",
                       help="refusal-direction run folder, used or computed there on first use (default runs/refusal_direction)")


def run_command(parser: argparse.ArgumentParser, run, argv: Sequence[str] | None = None, errors: tuple = ()) -> int:
    """Parse ``argv`` and call ``run(args)``; mechref's own errors (and ``errors``) print one line and exit 2."""
    from mechref.errors import MechrefError

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (MechrefError, *errors) as error:
        print(f"mechref: error: {error}", file=sys.stderr)
        return 2


def load_from_args(args: argparse.Namespace):
    from mechref.models import load_model

    return load_model(args.model, dtype=args.dtype, device=args.device, system_prompt=args.system_prompt)


def _model_info(args: argparse.Namespace) -> int:
    model = load_from_args(args)
    print(json.dumps(model.info(), indent=2, ensure_ascii=False))
    return 0


def _model_list(args: argparse.Namespace) -> int:
    from mechref.embedded import EMBEDDED_MODELS

    for model in EMBEDDED_MODELS.values():
        cached = (model.cached_folder() / "mechref_manifest.json").is_file()
        print(f"{model.name}\t{model.upstream} ({model.quantization}, {model.licence})\t{'cached' if cached else 'not yet cached'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mechref", description="Mechanistic interpretability of refusal in chat models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    model = sub.add_parser("model", help="inspect models", description="Inspect models.")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION")
    info = model_sub.add_parser("info", help="print a model's config (layers, width, heads, dtype, cache) as JSON")
    add_model_arguments(info)
    info.set_defaults(func=_model_info)
    listing = model_sub.add_parser("list", help="list the embedded models and whether they are cached")
    listing.set_defaults(func=_model_list)

    for name, help_text in ANALYSES.items():
        run = sub.add_parser(name, help=help_text, add_help=False)
        run.add_argument("rest", nargs=argparse.REMAINDER)
        run.set_defaults(func=lambda a, name=name: _run_analysis(name, a.rest))
    return parser


def _run_analysis(name: str, argv: Sequence[str]) -> int:
    import importlib

    module = importlib.import_module(f"mechref.analyses.{name}")
    return module.main(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from mechref.errors import MechrefError

    try:
        return int(args.func(args) or 0)
    except MechrefError as error:
        print(f"mechref: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
