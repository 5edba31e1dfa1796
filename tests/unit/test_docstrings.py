"""Every public module, class, function and method of mechref has a docstring (the API reference
is built from them: an undocumented name would be a bare signature there)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import mechref


def public_names_without_docstring() -> list[str]:
    missing: list[str] = []
    for info in pkgutil.walk_packages(mechref.__path__, "mechref."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if not inspect.getdoc(module):
            missing.append(f"{info.name} (module)")
        for name, member in vars(module).items():
            if name.startswith("_") or getattr(member, "__module__", None) != info.name:
                continue
            if not (inspect.isclass(member) or inspect.isfunction(member)):
                continue
            if not inspect.getdoc(member):
                missing.append(f"{info.name}.{name}")
            if inspect.isclass(member):
                for attr, value in vars(member).items():
                    if attr.startswith("_"):
                        continue
                    function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                    # Inherited documentation counts (a subclass's validate() is the base's validate()).
                    if inspect.isfunction(function) and not (function.__doc__ or inspect.getdoc(getattr(member, attr, None))):
                        missing.append(f"{info.name}.{name}.{attr}")
    return missing


def test_every_public_name_has_a_docstring():
    missing = public_names_without_docstring()
    assert missing == [], f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)
