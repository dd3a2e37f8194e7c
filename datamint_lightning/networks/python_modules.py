"""Any ``torch.nn.Module`` class of the user's own, saved as its import path plus constructor arguments (JSON)
beside safetensors weights, never a pickle; rebuilt by importing the class (its module travels with the package
as MLflow ``code_paths``) and calling it with those arguments.

The arguments come from ``module.datamint_init_args`` (a dict) when set, else from the instance itself: each
parameter of the class's ``__init__`` must be held by an attribute of the same name (or ``_name``) with a JSON
value, as most modules keep them (``self.channels = channels``). Where one cannot be recovered, the error says
which, and the two ways to provide it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from datamint_lightning.errors import ConfigError, PackagingError

LIBRARY = "python"
INIT_ARGS_ATTRIBUTE = "datamint_init_args"
# torch's factory arguments say where parameters live, not what the network is: the loader places it itself
PLACEMENT_ARGUMENTS = ("device", "dtype")


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def import_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def init_arguments(module: Any, where: str) -> dict[str, Any]:
    """The constructor arguments that rebuild ``module`` (see the module docstring), or a ``PackagingError``."""
    cls = type(module)
    given = getattr(module, INIT_ARGS_ATTRIBUTE, None)
    if isinstance(given, dict):
        if not _plain(given):
            raise PackagingError(f"{where}.{INIT_ARGS_ATTRIBUTE} must hold only JSON values (numbers, strings, lists).")
        return dict(given)
    parameters = [
        p
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in PLACEMENT_ARGUMENTS
    ]
    arguments, missing = {}, []
    for parameter in parameters:
        for name in (parameter.name, f"_{parameter.name}"):
            value = getattr(module, name, inspect.Parameter.empty)
            if value is not inspect.Parameter.empty and _plain(value):
                arguments[parameter.name] = list(value) if isinstance(value, tuple) else value
                break
        else:
            missing.append(parameter.name)
    if missing:
        listed = ", ".join(f"'{name}'" for name in missing)
        assignments = "; ".join(f"self.{name} = {name}" for name in missing)
        every = ", ".join(f"'{p.name}': ..." for p in parameters)
        raise PackagingError(
            f"{where} is a {cls.__name__} ({import_path(cls)}); it is saved as import path + constructor arguments "
            f"+ weights (never pickled), but the argument(s) {listed} of {cls.__name__}.__init__ cannot be "
            f"recovered: no attribute of that name holds a JSON value. Add `{assignments}` to "
            f"{cls.__name__}.__init__, or set `{INIT_ARGS_ATTRIBUTE} = {{{every}}}` on the module before saving "
            f"(or build it with datamint_lightning.networks.build_network)."
        )
    return arguments


def describe_module(module: Any, where: str) -> dict[str, Any]:
    """The config that rebuilds ``module``: ``{"library": "python", "class": "pkg.mod:Class", "init_args": {...}}``
    (``serving.saved_state.network_description`` checks it by rebuilding the module)."""
    cls = type(module)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        place = "in __main__" if cls.__module__ == "__main__" else "in a function"
        raise PackagingError(
            f"{where} is a {cls.__qualname__} defined {place}; a loaded package could not import it. Move the "
            "class to a module file and import it from there."
        )
    return {"library": LIBRARY, "class": import_path(cls), "init_args": init_arguments(module, where)}


def mismatch_hint(config: dict[str, Any]) -> str:
    """What to do when ``config`` does not rebuild the module it describes."""
    name = str(config["class"]).rsplit(".", 1)[-1].rsplit(":", 1)[-1]
    arguments = config["init_args"]
    return f"{name}(**{arguments}) does not rebuild it; set {INIT_ARGS_ATTRIBUTE} to the arguments it was built with"


def build_python_module(config: dict[str, Any]):
    """Import ``config["class"]`` and call it with ``config["init_args"]``."""
    module_name, _, qualname = str(config.get("class", "")).partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(
            f"network class {config.get('class')!r} cannot be imported ({error}); its module must be importable "
            "(packages bundle it as MLflow code_paths)."
        ) from None
    return target(**dict(config.get("init_args") or {}))
