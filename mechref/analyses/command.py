"""What every ``python -m mechref.analyses.<name>`` command is built on: :class:`AnalysisCommand`
(settings class -> options, ``--config``, checks before the model loads, run, report) and the
error style every command shares (one line ``mechref: error: …``, exit code 2; a saved traceback
for the unexpected).
"""

from __future__ import annotations

import argparse
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

from mechref.errors import MechrefError
from mechref.framework import memory
from mechref.framework.paths import cache_dir
from mechref.framework.settings import Settings, add_arguments, check_config_keys, read_config, resolve
from mechref.model.devices import device_batch_defaults, slow_dtype_note
from mechref.model.loading import MechrefModel
from mechref.model.settings import ModelSettings


class ArgumentParser(argparse.ArgumentParser):
    """argparse with mechref's error style: one line ``mechref: error: …`` and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mechref: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """argparse's ``parse_args``, with negative numbers accepted as option values (``--x -1e9``)."""
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
        """The command's parser: ``--config``, the model options, one option per setting, ``--out``."""
        return analysis_parser(self.prog, self.doc, self.settings, self.default_out, self.model_defaults)

    def parse(self, argv: Sequence[str] | None) -> tuple[ModelSettings, Any, Path | None]:
        """``(model settings, analysis settings, out)`` from the command line (and its ``--config`` file)."""
        return parse_analysis_args(self.parser(), self.settings, argv, self.default_out, self.model_defaults)

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Run the command on ``argv`` (default: the process's arguments); the exit code (0, 1 on a crash, 2 on
        bad input)."""
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return guarded(lambda: self._main(argv))

    def _main(self, argv: Sequence[str] | None) -> int:
        model_settings, settings, out = self.parse(argv)
        if self.check is not None:
            # Files, output targets and ranges are checked before the model loads (seconds, not minutes).
            self.check(settings, out)
        # A model without a chat template (a base model) stops now, not after minutes of dequantizing.
        model_settings.check_chat()
        # Memory too: a command that will not fit stops now, naming the setting, not after minutes of swapping.
        given = given_settings(self.parser(), self.settings, argv)
        settings, memory_notes = model_settings.check_memory(settings, given)
        for note in memory_notes:
            print(note, flush=True)
        started = time.perf_counter()
        print(f"loading model {model_settings.model or '(embedded default)'} …", flush=True)
        memory.mark("load")
        model = model_settings.load()
        loaded = round(time.perf_counter() - started, 2)
        # Batch sizes nobody chose are raised on a GPU (mechref.model.devices); on a CPU they stay (lowered
        # above, before loading, only where the memory available cannot hold them).
        settings, notes = device_batch_defaults(model, settings, given)
        slow = slow_dtype_note(model)
        if slow is not None:
            notes = [slow, *notes]
        for note in notes:
            print(note, flush=True)
        result = self.run(model, settings, out)
        if hasattr(result, "timings"):
            result.timings = {"load": loaded, **result.timings}
        if self.report is not None and out is not None:
            memory.mark("report")
            self.report(result, out)
        memory.write_log({"command": self.prog})
        return 0


# ----- the mechref command ----------------------------------------------------------------------
