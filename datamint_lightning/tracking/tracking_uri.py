"""Choosing and checking the MLflow tracking URI: ``MLFLOW_TRACKING_URI``, the config, or the embedded store.

The embedded store is MLflow's own default, ``sqlite:///<working directory>/mlflow.db``, so that ``mlflow ui``,
``mlflow models serve -m models:/...`` and ``mlflow.search_runs(...)`` started in the same directory find the runs
without any setting; ``describe_store`` prints the exact commands (and the export line) for use from elsewhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from datamint_lightning.errors import TrackingError
from datamint_lightning.paths import home_dir

SUPPORTED_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "file", "databricks", "datamint")


EMBEDDED_DATABASE = "mlflow.db"  # MLflow 3's default store when MLFLOW_TRACKING_URI is unset


def embedded_tracking_uri() -> str:
    """MLflow's own default store, ``sqlite:///<cwd>/mlflow.db``, as the absolute URI MLflow itself resolves it to."""
    return f"sqlite:///{Path.cwd().resolve() / EMBEDDED_DATABASE}"


def resolve_tracking_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` wins, then the configured URI, then the embedded sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or embedded_tracking_uri()


def redact(uri: str) -> str:
    """The URI without a password or token, for messages, params and tags."""
    parts = urlsplit(uri)
    if not (parts.password or parts.username or re.search(r"(?i)(token|password|secret|key)=", parts.query)):
        return uri  # unchanged: urlunsplit would collapse sqlite:////abs/path to sqlite://abs/path
    if parts.password or parts.username:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" if parts.password else f"***@{host}"
        netloc += f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=netloc)
    query = re.sub(r"(?i)(token|password|secret|key)=[^&]*", r"\1=***", parts.query)
    return urlunsplit(parts._replace(query=query))


_CREDENTIALS_IN_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)\b(token|password|secret|api_key|apikey|key)=[^&\s'\"]+")


def redact_text(text: str) -> str:
    """Any text (messages, overrides, log lines, error tags) with URL credentials and secret query values masked."""
    return _SECRET_QUERY.sub(r"\1=***", _CREDENTIALS_IN_URL.sub(r"\1***:***@", text))


def split_credentials(uri: str) -> tuple[str, tuple[str, str] | None]:
    """``http://user:secret@host`` -> (``http://host``, (user, secret)): MLflow gets the clean URI and the
    credentials through MLFLOW_TRACKING_USERNAME/PASSWORD, so its own "View run ... at: <URI>" line and every
    stored URI stay free of them."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not (parts.username and parts.password):
        return uri, None
    from urllib.parse import unquote

    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), (unquote(parts.username), unquote(parts.password))


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).expanduser()


def default_artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a sqlite database (MLflow's default is the cwd)."""
    database = sqlite_path(uri)
    return (database.parent / "mlartifacts").resolve().as_uri() if database else None


def validate_tracking_uri(uri: str) -> None:
    """Reject a malformed URI (no network access): unknown scheme, sqlite without a path, http without a host."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme not in SUPPORTED_SCHEMES:
        raise TrackingError(
            f"Tracking URI {redact(uri)!r} has an unsupported scheme {scheme!r}; "
            f"expected one of {', '.join(SUPPORTED_SCHEMES)}."
        )
    if scheme == "sqlite" and (not uri.startswith("sqlite:///") or uri.rstrip("/") == "sqlite:"):
        raise TrackingError(f"Tracking URI {redact(uri)!r} is malformed; write sqlite:///<absolute path to .db>.")
    if scheme == "datamint":  # server named and API key present (see datamint_store.py)
        from datamint_lightning.tracking.datamint_uri import host_creds

        host_creds(uri)
    if scheme in ("http", "https"):
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1:
            raise TrackingError(f"Tracking URI {redact(uri)!r} is malformed; write {scheme}://<host>[:<port>].")


def is_remote(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def server_is_healthy(uri: str, timeout: float = 2.0) -> bool:
    """Whether an MLflow server answers ``/health`` (always True for local stores)."""
    if not is_remote(uri):
        return True
    import requests

    try:
        return requests.get(uri.rstrip("/") + "/health", timeout=timeout).status_code < 500
    except requests.RequestException:
        return False


def _lock_path(database: Path) -> Path:
    """The lock for one database, kept in the user's home rather than beside it (the working directory)."""
    import hashlib

    locks = home_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return locks / (hashlib.sha1(str(database.resolve()).encode()).hexdigest()[:16] + ".lock")


def prepare_sqlite_store(uri: str) -> None:
    """Create or migrate the sqlite schema under an inter-process lock: two trainings starting at once on a
    fresh store would otherwise race in MLflow's migrations and one would crash."""
    from filelock import FileLock  # a torch dependency, so always installed
    from mlflow import MlflowClient

    with FileLock(str(_lock_path(sqlite_path(uri))), timeout=300):
        MlflowClient(uri).search_experiments(max_results=1)  # building the store runs the migrations


def check_tracking_uri(uri: str, timeout: float = 10.0) -> None:
    """Fail fast, with one message, when the store is malformed or unreachable."""
    validate_tracking_uri(uri)
    scheme = urlsplit(uri).scheme.split("+")[0]
    database = sqlite_path(uri)
    if database is not None:
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrackingError(f"Cannot create the MLflow store folder {database.parent}: {error}") from error
        prepare_sqlite_store(uri)
        return
    if scheme in ("http", "https"):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as error:
            raise TrackingError(
                f"Cannot reach the MLflow tracking server at {redact(uri)} ({type(error).__name__}). Start it "
                "(e.g. `mlflow server --host 127.0.0.1 --port 5000`), fix MLFLOW_TRACKING_URI, or unset it to "
                f"use the embedded store {embedded_tracking_uri()}."
            ) from None
        if response.status_code >= 500:
            raise TrackingError(f"The MLflow tracking server at {redact(uri)} answered HTTP {response.status_code}.")
