"""Where things live: the per-user home (projects, embedded MLflow store) and the bundled configs."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "DATAMINT_LIGHTNING_HOME"


def home_dir() -> Path:
    """The per-user data directory: ``$DATAMINT_LIGHTNING_HOME`` or ``~/.datamint_lightning``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".datamint_lightning").expanduser().resolve()


def _bundled_dir(name: str) -> Path:
    # Installed wheel: datamint_lightning/<name>; source checkout (editable install): <repo>/<name>.
    package = Path(__file__).resolve().parent
    for candidate in (package / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"Cannot find the bundled '{name}' directory next to {package}; reinstall the package.")


def conf_dir() -> Path:
    """The Hydra config groups (``conf/``)."""
    return _bundled_dir("conf")


def recipes_dir() -> Path:
    """The ``recipe=`` group (``recipes/``)."""
    return _bundled_dir("recipes")
