"""One settings object per analysis, filled from Python, a config file or the command line.

An analysis declares its settings as a dataclass deriving from :class:`Settings`, each field made
with :func:`option` (default, help text, command-line details). The same class then

* is built in Python: ``RefusalDirectionSettings(n_test=20)``, checked in ``__post_init__``;
* is read from a TOML or JSON file: ``RefusalDirectionSettings.from_file("paper.toml")``;
* becomes command-line options: :func:`add_arguments` writes one ``--option`` per field, and
  :func:`resolve` layers defaults < ``--config FILE`` < options given on the command line.

>>> from dataclasses import dataclass
>>> @dataclass
... class Demo(Settings):
...     n: int = option(8, "prompts per class", minimum=1)
...     fast: bool = option(True, "use the fast path")
>>> Demo.from_dict({"n": 3}).n
3
>>> Demo(n=0)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mechref.errors.SettingsError: n must be at least 1, got 0 (--n)
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_arguments(parser, Demo)
>>> resolve(Demo, parser.parse_args(["--no-fast"])).fast
False
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar, get_args, get_origin

from mechref.errors import SettingsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

S = TypeVar("S", bound="Settings")


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    nargs: str | int | None = None,
    repeat: bool = False,
    cli: bool = True,
) -> Any:
    """A settings field: its default, its documentation and how it appears on the command line.

    ``minimum``/``maximum`` bound numbers (checked whenever the settings are built); ``flag``
    overrides the option name (default ``--field-name``); ``repeat`` makes a list option take one
    value per use (``--prompt A --prompt B``); ``cli=False`` keeps a field out of the command line
    (config files and Python still set it).
    """
    metadata = {
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "minimum": minimum,
        "maximum": maximum,
        "nargs": nargs,
        "repeat": repeat,
        "cli": cli,
    }
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag of a settings field (``--n-train`` for ``n_train``, unless the field names its own)."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


class Settings:
    """Base of every analysis's settings dataclass: validation, dict/file round trips."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            setattr(self, field.name, _coerce(field, value, hints[field.name]))
        self.validate()

    def validate(self) -> None:
        """Check relations between fields (ranges of single fields are checked already); raise :class:`SettingsError`."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (paths as strings)."""
        return {k: _plain(v) for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def field_names(cls) -> list[str]:
        """The settings' field names, in order."""
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[S], data: dict[str, Any], where: str = "settings") -> S:
        """Build from a mapping whose keys are field names (``-`` may stand for ``_``); unknown keys are an error."""
        values = {str(k).replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise SettingsError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(cls.field_names())}")
        return cls(**values)

    @classmethod
    def from_file(cls: type[S], path: str | Path) -> S:
        """Build from a TOML or JSON file of ``name = value`` settings."""
        return cls.from_dict(read_config(path), where=str(path))

    def to_argv(self) -> list[str]:
        """The command-line options that give these settings (only those that differ from the defaults).

        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Demo(Settings):
        ...     n: int = option(8, "n")
        ...     fast: bool = option(True, "fast")
        >>> Demo(n=3, fast=False).to_argv()
        ['--n', '3', '--no-fast']
        """
        argv: list[str] = []
        defaults = type(self)()
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value, default = getattr(self, field.name), getattr(defaults, field.name)
            if value == default or not field.metadata.get("cli", True):
                continue
            flag = flag_of(field)
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, list):
                if field.metadata.get("repeat"):
                    for v in value:
                        argv += [flag, str(v)]
                else:
                    argv += [flag, *map(str, value)]
            else:
                argv += [flag, "none" if value is None else str(value)]
        return argv

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied (and checked again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def read_config(path: str | Path) -> dict[str, Any]:
    """The settings in a ``.toml`` or ``.json`` file, as a flat mapping (a TOML table's keys are merged in)."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {error}") from error
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a table of settings, not {type(data).__name__}")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        # Tables ([model], [selection], ...) only group settings for the reader.
        flat.update(value if isinstance(value, dict) else {key: value})
    return flat


# ----- command line ---------------------------------------------------------------------------
def add_arguments(
    parser: argparse.ArgumentParser, cls: type[Settings], defaults: Settings | None = None, title: str | None = None
) -> None:
    """One option per field of ``cls`` (defaults shown from ``defaults``); unset options stay absent
    from the parsed namespace, so :func:`resolve` can tell them from defaults."""
    group = parser.add_argument_group(title) if title else parser
    hints = _hints(cls)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not field.metadata.get("cli", True):
            continue
        default = getattr(defaults, field.name) if defaults is not None else _default(field)
        hint = hints[field.name]
        help_text = field.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS}
        base, optional = _unwrap(hint)
        if base is bool:
            if default:
                group.add_argument(
                    "--no-" + flag_of(field)[2:],
                    action="store_false",
                    help=f"{help_text} (on by default; this turns it off)",
                    **kwargs,
                )
            else:
                group.add_argument(flag_of(field), action="store_true", help=help_text, **kwargs)
            continue
        if get_origin(base) is list:
            (item,) = get_args(base) or (str,)
            if field.metadata.get("repeat"):
                kwargs["action"] = "append"
            else:
                kwargs["nargs"] = field.metadata.get("nargs") or "+"
            base = item
        if get_origin(base) is Literal:
            kwargs["choices"] = list(get_args(base))
            kwargs["type"] = type(get_args(base)[0])
        else:
            kwargs["type"] = base if base in (int, float, str, Path) else str
        if optional and default is not None and kwargs["type"] is not str:
            kwargs["type"] = _or_none(kwargs["type"])  # "none" unsets a field whose default is set
        if field.metadata.get("metavar"):
            kwargs["metavar"] = field.metadata["metavar"]
        shown = "none" if default is None else (" ".join(map(str, default)) if isinstance(default, list) else default)
        group.add_argument(flag_of(field), help=f"{help_text} (default: {shown})" if help_text else None, **kwargs)


def resolve(cls: type[S], namespace: argparse.Namespace, config: dict[str, Any] | None = None, defaults: S | None = None) -> S:
    """``defaults`` (or the class defaults), overridden by ``config`` entries for this class, then by
    the options given on the command line."""
    values = dataclasses.asdict(defaults) if defaults is not None else {}  # type: ignore[call-overload]
    names = set(cls.field_names())
    for key, value in (config or {}).items():
        key = key.replace("-", "_")
        if key in names:
            values[key] = value
    for key, value in vars(namespace).items():
        if key in names:
            values[key] = value
    return cls(**values)


def check_config_keys(config: dict[str, Any], classes: list[type[Settings]], extra: set[str], where: str) -> None:
    """Every key of a config file must name a setting of one of ``classes`` or one of ``extra``."""
    known = set().union(*(set(c.field_names()) for c in classes)) | extra
    unknown = sorted(k for k in (key.replace("-", "_") for key in config) if k not in known)
    if unknown:
        raise SettingsError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


# ----- types ----------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _or_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in its errors
    return parse


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(hint, False)``."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _coerce(field: dataclasses.Field, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type and range; convert strings to paths and ints to floats."""
    name = field.name
    where = f"({flag_of(field)})" if field.metadata.get("cli", True) else "(settings)"
    base, optional = _unwrap(hint)
    if value is None:
        if optional or base is Any:
            return None
        raise SettingsError(f"{name} needs a value {where}")
    if get_origin(base) is list:
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{name} takes a list, got {value!r} {where}")
        (item,) = get_args(base) or (Any,)
        inner = dataclasses.field(metadata=field.metadata)
        inner.name = name
        return [_coerce(inner, v, item) for v in value]
    if get_origin(base) is Literal:
        if value not in get_args(base):
            raise SettingsError(f"{name} must be one of {', '.join(map(str, get_args(base)))}, got {value!r} {where}")
        return value
    if base is Path:
        if not isinstance(value, (str, Path)):
            raise SettingsError(f"{name} takes a path, got {value!r} {where}")
        return Path(value).expanduser()
    if base is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{name} takes true or false, got {value!r} {where}")
        return value
    if base in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (base is int and not isinstance(value, int)):
            raise SettingsError(f"{name} takes {'an integer' if base is int else 'a number'}, got {value!r} {where}")
        value = base(value)
        low, high = field.metadata.get("minimum"), field.metadata.get("maximum")
        if low is not None and value < low:
            raise SettingsError(f"{name} must be at least {low:g}, got {value:g} {where}")
        if high is not None and value > high:
            raise SettingsError(f"{name} must be at most {high:g}, got {value:g} {where}")
        if value != value:
            raise SettingsError(f"{name} is NaN {where}")
        return value
    if base is str and not isinstance(value, str):
        raise SettingsError(f"{name} takes text, got {value!r} {where}")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
