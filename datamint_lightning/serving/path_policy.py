"""Which server files a prediction may read: one rule for every path form (``"a/b.nii.gz"``, ``Path``,
``{"path": ...}``).

In-process use (``model.predict(["ct.nii.gz"])`` in a notebook) reads the caller's own files as given. Under
MLflow's scoring server (``mlflow models serve``, ``mlflow models predict``: MLflow sets
``_MLFLOW_IS_IN_SERVING_ENVIRONMENT`` there) any HTTP client could name a file, so paths are read only when
``$DATAMINT_SERVING_PATH_ROOT`` names a folder, and only inside it once links are resolved. ``{"path"}`` items
are the REST form and always follow the served rule. Messages name the path as the client gave it: never the
root, a resolved server path, or whether a file outside the root exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datamint_lightning.errors import PredictionError, excerpt

MAX_PATH_CHARACTERS = 4096  # PATH_MAX on Linux
PATH_ROOT_ENV = "DATAMINT_SERVING_PATH_ROOT"
SERVING_ENV = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # set by mlflow.pyfunc.scoring_server.init


def serving_requests() -> bool:
    """Whether predictions come from MLflow's scoring server (so from clients, not from this process)."""
    return os.environ.get(SERVING_ENV, "").strip().lower() in ("true", "1")


def input_root() -> Path | None:
    """The folder served path inputs must lie in (links resolved), or None when path inputs are off."""
    root = os.environ.get(PATH_ROOT_ENV, "").strip()
    return Path(root).resolve() if root else None


def allowed_path(value: Any, source: str, served: bool | None = None) -> Path:
    """The file ``value`` names, when this process may read it for a prediction (``served``: apply the
    served rule; default: when serving requests)."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value or "\0" in value or len(value) > MAX_PATH_CHARACTERS:
        raise PredictionError(
            f"{source}: path {excerpt(value)} must be a file path: a non-empty string without NUL characters, "
            f"at most {MAX_PATH_CHARACTERS} characters."
        )
    if not (serving_requests() if served is None else served):
        return Path(value)
    base = input_root()
    if base is None:
        raise PredictionError(
            f"{source}: file path inputs are disabled on this server; send the file as "
            f'{{"data": <base64>, "mime_type": ...}} or an array (the server\'s operator can '
            f"set {PATH_ROOT_ENV} to a folder inputs may be read from)."
        )
    try:
        path = (base / value).resolve()  # an absolute value replaces base; links are followed before the check
    except (OSError, RuntimeError):  # a link loop
        path = None
    if path is None or not path.is_relative_to(base):
        raise PredictionError(f"{source}: path {excerpt(value)} is not inside the server's input folder.")
    if not path.exists():
        raise PredictionError(f"{source}: path {excerpt(value)} does not exist in the server's input folder.")
    return path


def hide_folder(message: str, folder: Path, label: str = "") -> str:
    """``message`` with the server folder ``folder`` (resolved or not) replaced by ``label``."""
    for text in {str(folder.resolve()), str(folder)}:
        message = message.replace(text + os.sep, f"{label}/" if label else "").replace(text, label or ".")
    return message
