"""Choosing and checking the MLflow tracking URI: ``MLFLOW_TRACKING_URI``, the config, or the embedded store."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from datamint_lightning.errors import TrackingError
from datamint_lightning.paths import home_dir

SUPPORTED_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "file", "databricks")


def embedded_tracking_uri() -> str:
    """The default store: one sqlite database per user, next to the project store."""
    return f"sqlite:///{home_dir() / 'mlflow.db'}"


def resolve_tracking_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` wins, then the configured URI, then the embedded sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or embedded_tracking_uri()


def redact(uri: str) -> str:
    """The URI without a password or token, for messages, params and tags."""
    parts = urlsplit(uri)
    if parts.password or parts.username:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" if parts.password else f"***@{host}"
        netloc += f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=netloc)
    query = re.sub(r"(?i)(token|password|secret|key)=[^&]*", r"\1=***", parts.query)
    return urlunsplit(parts._replace(query=query))


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).expanduser()


def default_artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a sqlite database (MLflow's default is the cwd)."""
    database = sqlite_path(uri)
    return (database.parent / "mlartifacts").resolve().as_uri() if database else None


def check_tracking_uri(uri: str, timeout: float = 10.0) -> None:
    """Fail fast, with one message, when the store is malformed or unreachable."""
    scheme = urlsplit(uri).scheme.split("+")[0]
    if scheme not in SUPPORTED_SCHEMES:
        raise TrackingError(f"Tracking URI {redact(uri)!r} has an unsupported scheme {scheme!r}; "
                            f"expected one of {', '.join(SUPPORTED_SCHEMES)}.")
    database = sqlite_path(uri)
    if database is not None:
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrackingError(f"Cannot create the MLflow store folder {database.parent}: {error}") from error
        return
    if scheme in ("http", "https"):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as error:
            raise TrackingError(
                f"Cannot reach the MLflow tracking server at {redact(uri)} ({type(error).__name__}). Start it "
                "(e.g. `mlflow server --host 127.0.0.1 --port 5000`), fix MLFLOW_TRACKING_URI, or unset it to "
                f"use the embedded store {embedded_tracking_uri()}.") from None
        if response.status_code >= 500:
            raise TrackingError(f"The MLflow tracking server at {redact(uri)} answered HTTP {response.status_code}.")
