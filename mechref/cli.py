"""The ``mechref`` command line (``mechref --help``, ``python -m mechref --help``) and the one
function every ``python -m mechref.analyses.<name>`` command is built on (:func:`analysis_main`)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from mechref.cache import cache_dir
from mechref.devices import device_batch_defaults
from mechref.embedded import EMBEDDED_MODELS
from mechref.errors import MechrefError
from mechref.models import MechrefModel
from mechref.settings import ModelSettings, Settings, add_arguments, check_config_keys, read_config, resolve

ANALYSES = {
    "quickstart": "load, chat, capture a refusal direction, ablate and add it (a few minutes on CPU)",
    "refusal_direction": "find, select, test and remove the refusal direction (Arditi et al. 2024)",
    "suffix_hijack": "how an adversarial suffix suppresses the refusal direction by moving attention",
    "gcg": "search an adversarial suffix with GCG and write it with its provenance",
    "multilingual": "refusal across languages: audit, cosine parallelism, transfer, silhouette, PCA (Wang et al. 2025)",
    "cosine_parallelism": "cosine similarity of per-language refusal vectors",
    "silhouette": "silhouette scores and PCA of harmful vs harmless activations per language",
    "categories": "refusal per harm category: category directions, cross-category transfer, refusal subspaces",
    "damage": "what an edit breaks: over-refusal (XSTest), KL and cross-entropy, GSM8K, against the unedited model",
    "optimize_edit": "search edits (direction layer, per-layer strengths) for the front of refusal against KL (Optuna)",
    "export": "write the edit as a transformers folder, LoRA adapter, GGUF and llama.cpp control vector, each verified",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with mechref's error style: one line ``mechref: error: …`` and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mechref: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        return super().parse_args(attach_negative_values(self, sys.argv[1:] if args is None else list(args)), namespace)


_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def attach_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Write ``--x -1e9`` as ``--x=-1e9``, which argparse would otherwise read as an unknown option.

    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--x", type=float)
    >>> attach_negative_values(parser, ["--x", "-1e9", "-5"])
    ['--x=-1e9', '-5']
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        action = parser._option_string_actions.get(token) if token.startswith("--") else None
        takes_value = action is not None and action.nargs != 0
        if takes_value and i + 1 < len(argv) and _NUMBER.match(argv[i + 1]):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def report_crash(error: BaseException) -> int:
    """Save the traceback of an unexpected error to a file and say where, in one line; exit code 1."""
    folder = cache_dir() / "crashes"
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"traceback-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt", dir=folder)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write("".join(traceback.format_exception(error)))
    path = Path(name)
    print(
        f"mechref: internal error: {type(error).__name__}: {error} (traceback saved to {path}; please report it)",
        file=sys.stderr,
    )
    return 1


def guarded(body: Callable[[], int]) -> int:
    """Run a command body: mechref's errors as one line (exit 2), Ctrl-C as a note on resuming
    (exit 130), anything else as :func:`report_crash` (exit 1)."""
    try:
        return int(body() or 0)
    except MechrefError as error:
        print(f"mechref: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mechref: interrupted; the stages already finished are saved, and the same command resumes", file=sys.stderr)
        return 130
    except Exception as error:
        return report_crash(error)


def analysis_parser(
    prog: str, doc: str | None, settings_cls: type[Settings], default_out: str | None, model_defaults: ModelSettings | None = None
) -> argparse.ArgumentParser:
    """The parser of an analysis command: ``--config``, the model options, one option per setting, ``--out``."""
    parser = ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML or JSON file of settings (any option below, by its name); options given here win",
    )
    add_arguments(parser, ModelSettings, model_defaults or ModelSettings(), "model")
    add_arguments(parser, settings_cls, None, "analysis")
    if default_out is not None:
        # A command whose output is one file (the GCG search writes a suffix file) says so.
        is_file = Path(default_out).suffix != ""
        parser.add_argument(
            "--out",
            type=Path,
            default=argparse.SUPPRESS,
            metavar="FILE" if is_file else "DIR",
            help=f"output {'file' if is_file else 'folder'} (default: {default_out})",
        )
    return parser


def parse_analysis_args(
    parser: argparse.ArgumentParser,
    settings_cls: type[Settings],
    argv: Sequence[str] | None,
    default_out: str | None,
    model_defaults: ModelSettings | None = None,
) -> tuple[ModelSettings, Any, Path | None]:
    """``(model settings, analysis settings, out)``: defaults < ``--config`` file < options given."""
    args = parser.parse_args(argv)
    config = read_config(args.config) if args.config else {}
    check_config_keys(config, [ModelSettings, settings_cls], {"out"} if default_out is not None else set(), str(args.config))
    model_settings = resolve(ModelSettings, args, config, model_defaults or ModelSettings())
    settings = resolve(settings_cls, args, config)
    out = getattr(args, "out", None) or config.get("out") or default_out
    return model_settings, settings, Path(out) if out is not None else None


def given_settings(parser: argparse.ArgumentParser, settings_cls: type[Settings], argv: Sequence[str] | None) -> set[str]:
    """The names of ``settings_cls``'s fields the user set, on the command line or in ``--config``."""
    args = parser.parse_args(argv)
    config = read_config(args.config) if args.config else {}
    names = set(settings_cls.field_names())
    return {k for k in vars(args) if k in names} | {k.replace("-", "_") for k in config if k.replace("-", "_") in names}


@dataclass
class AnalysisCommand:
    """One ``python -m mechref.analyses.<name>`` command: its settings class, the library function
    that runs it, the report that draws its result, and where it writes by default.

    ``main(argv)`` parses the options into settings, calls ``check(settings, out)`` (the checks
    that need no model: files, output targets), loads the model, calls ``run(model, settings, out)``,
    then ``report(result, out)``. mechref's own errors print one line ``mechref: error: ...`` and
    exit 2; an unexpected error prints one line with the path of its saved traceback and exits 1.
    """

    prog: str
    doc: str | None
    settings: type[Settings]
    run: Callable[[MechrefModel, Any, Path | None], Any]
    report: Callable[[Any, Path], Any] | None
    default_out: str | None
    check: Callable[[Any, Path | None], None] | None = None
    model_defaults: ModelSettings = field(default_factory=ModelSettings)

    def parser(self) -> argparse.ArgumentParser:
        return analysis_parser(self.prog, self.doc, self.settings, self.default_out, self.model_defaults)

    def parse(self, argv: Sequence[str] | None) -> tuple[ModelSettings, Any, Path | None]:
        """``(model settings, analysis settings, out)`` from the command line (and its ``--config`` file)."""
        return parse_analysis_args(self.parser(), self.settings, argv, self.default_out, self.model_defaults)

    def main(self, argv: Sequence[str] | None = None) -> int:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return guarded(lambda: self._main(argv))

    def _main(self, argv: Sequence[str] | None) -> int:
        model_settings, settings, out = self.parse(argv)
        if self.check is not None:
            # Files, output targets and ranges are checked before the model loads (seconds, not minutes).
            self.check(settings, out)
        started = time.perf_counter()
        print(f"loading model {model_settings.model or '(embedded default)'} …", flush=True)
        model = model_settings.load()
        loaded = round(time.perf_counter() - started, 2)
        # Batch sizes nobody chose are raised on a GPU (mechref.devices); on a CPU they stay.
        settings, notes = device_batch_defaults(model, settings, given_settings(self.parser(), self.settings, argv))
        for note in notes:
            print(note, flush=True)
        result = self.run(model, settings, out)
        if hasattr(result, "timings"):
            result.timings = {"load": loaded, **result.timings}
        if self.report is not None and out is not None:
            self.report(result, out)
        return 0


# ----- the mechref command ----------------------------------------------------------------------
def _model_info(args: argparse.Namespace) -> int:
    model = resolve(ModelSettings, args, None, ModelSettings(dtype="float32")).load()
    print(json.dumps(model.info(), indent=2, ensure_ascii=False))
    return 0


def _model_list(args: argparse.Namespace) -> int:
    for model in EMBEDDED_MODELS.values():
        cached = [d for d in ("float32", "bfloat16", "float16") if (model.cached_folder(d) / "mechref_manifest.json").is_file()]
        state = f"cached ({', '.join(cached)})" if cached else "not yet cached"
        print(f"{model.name}\t{model.upstream} ({model.quantization}, {model.licence})\t{state}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from mechref.overview import find_runs, write_overview

    page = write_overview(args.runs_dir, args.out)
    print(f"{len(find_runs(args.runs_dir))} runs; report in {page}")
    return 0


def build_parser() -> argparse.ArgumentParser:
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
