"""Telling people where their runs are: the ``mlflow ui`` command, the run's page, and the export line.

The lines are meant to be copied verbatim into a new shell, so they name the store by its absolute URI.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from datamint_lightning.errors import TrackingError
from datamint_lightning.tracking.tracking_uri import (
    EMBEDDED_DATABASE,
    is_remote,
    redact,
    resolve_tracking_uri,
    split_credentials,
    sqlite_path,
)

UI_ADDRESS = "http://127.0.0.1:5000"  # where ``mlflow ui`` listens by default


def run_page(base: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI's training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def export_line(uri: str) -> str:
    return f"export MLFLOW_TRACKING_URI={shlex.quote(uri)}"


def describe_store(uri: str, experiment_id: str, run_id: str) -> list[str]:
    """Where the run is and how to open it, one line each, for the end-of-run summary."""
    shown = redact(uri)
    if is_remote(uri):  # the server is the UI; the link carries no credentials
        return [
            f"MLflow server:   {shown}",
            f"run page:        {run_page(redact(split_credentials(uri)[0]), experiment_id, run_id)}",
        ]
    database = sqlite_path(uri)
    lines = [f"MLflow store:    {shown}"]
    if database is not None:
        lines.append(
            f"                 (MLflow's default store in {database.parent}: MLflow commands run there "
            "find it; elsewhere, export the line below)"
        )
    lines += [
        f"browse:          mlflow ui --backend-store-uri {shlex.quote(shown)}",
        f"run page:        {run_page(UI_ADDRESS, experiment_id, run_id)}",
    ]
    if shown == uri:  # never print a secret into a log
        lines.append(f"other shells:    {export_line(uri)}")
    return lines


def store_uri_for(where: str | None = None) -> str:
    """The tracking URI a training started in ``where`` (a folder or an ``.db`` file; default: here) uses.

    Raises ``TrackingError`` when there is no store there, so a wrong folder is not exported silently.
    """
    if where is None:
        uri = resolve_tracking_uri()
        database = sqlite_path(uri)
    else:
        path = Path(where).expanduser().resolve()
        database = path if path.suffix == ".db" else path / EMBEDDED_DATABASE
        uri = f"sqlite:///{database}"
    if database is not None and not database.is_file():
        raise TrackingError(
            f"There is no MLflow store at {database}: run this in the folder you trained in, "
            "or name it (python -m datamint_lightning tracking env <folder>)."
        )
    return uri
