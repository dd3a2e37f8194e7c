"""Configuring MLflow from the environment: the tracking URI and the active Datamint project.

Nothing here runs at import time; MLflow is touched only when a function is called.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import Enum
from typing import Any

from datamint_lightning.errors import ConfigError

logger = logging.getLogger(__name__)


class EnvVars(str, Enum):
    """The environment variables naming the active Datamint project (the SDK's names)."""

    DATAMINT_PROJECT_ID = "DATAMINT_PROJECT_ID"
    DATAMINT_PROJECT_NAME = "DATAMINT_PROJECT_NAME"


TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
PROJECT_ID_ENV = EnvVars.DATAMINT_PROJECT_ID.value
PROJECT_NAME_ENV = EnvVars.DATAMINT_PROJECT_NAME.value


@dataclass(frozen=True)
class ActiveProject:
    """The project whose experiment receives runs started without an explicit experiment."""

    id: str | None
    name: str | None

    @property
    def experiment_name(self) -> str:
        return self.name or str(self.id)


def active_project() -> ActiveProject | None:
    """The project named by ``DATAMINT_PROJECT_ID`` / ``DATAMINT_PROJECT_NAME``, or None."""
    project_id, name = os.environ.get(PROJECT_ID_ENV) or None, os.environ.get(PROJECT_NAME_ENV) or None
    return ActiveProject(project_id, name) if project_id or name else None


def set_project(project: Any) -> ActiveProject:
    """Make ``project`` (a ``Project``, or a name or id in the local project store) the active project.

    It is stored in the environment so that child processes (DDP workers, ``mlflow`` plugins) see it too.
    """
    if isinstance(project, str):
        from datamint_lightning.data.projects import ProjectStore

        project = ProjectStore().open(project)
    project_id, name = getattr(project, "id", None), getattr(project, "name", None)
    if not project_id and not name:
        raise ConfigError(f"set_project needs a project with an id or a name, got {project!r}.")
    for key, value in ((PROJECT_ID_ENV, project_id), (PROJECT_NAME_ENV, name)):
        if value:
            os.environ[key] = str(value)
        else:
            os.environ.pop(key, None)
    return ActiveProject(project_id and str(project_id), name and str(name))


def setup_mlflow_environment(overwrite: bool = False, set_mlflow: bool = True, tracking_uri: str | None = None) -> bool:
    """Set ``MLFLOW_TRACKING_URI`` (``tracking_uri``, else the embedded sqlite store, which needs no token).

    An existing ``MLFLOW_TRACKING_URI`` is kept unless ``overwrite``. With ``set_mlflow`` the URI is also passed
    to ``mlflow.set_tracking_uri``. Returns True on success, False (with a logged reason, nothing changed) when
    the URI is malformed or lacks what it needs (e.g. ``datamint://`` without ``DATAMINT_API_KEY``).
    """
    from datamint_lightning.errors import TrackingError
    from datamint_lightning.tracking.tracking_uri import embedded_tracking_uri, redact, validate_tracking_uri

    current = os.environ.get(TRACKING_URI_ENV)
    write = overwrite or not current
    uri = (tracking_uri or embedded_tracking_uri()) if write else current
    try:
        validate_tracking_uri(uri)
    except TrackingError as error:
        logger.warning("MLflow not configured with %s: %s", redact(uri), error)
        return False
    if write:
        os.environ[TRACKING_URI_ENV] = uri
    if set_mlflow:
        import mlflow

        mlflow.set_tracking_uri(uri)
    return True


def ensure_mlflow_configured() -> str:
    """Return the tracking URI; raise ``ValueError`` naming what is missing (URI, project) or malformed."""
    from datamint_lightning.errors import TrackingError
    from datamint_lightning.tracking.tracking_uri import validate_tracking_uri

    missing = []
    uri = os.environ.get(TRACKING_URI_ENV)
    if not uri:
        import mlflow

        uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    if not uri:
        missing.append(f"{TRACKING_URI_ENV} (or mlflow.set_tracking_uri)")
    if active_project() is None:
        missing.append(f"{PROJECT_ID_ENV} or {PROJECT_NAME_ENV} (or set_project(...))")
    if missing:
        raise ConfigError(
            "MLflow is not configured: missing "
            + " and ".join(missing)
            + ". Call setup_mlflow_environment() and set_project(<project>)."
        )
    try:
        validate_tracking_uri(uri)
    except TrackingError as error:
        raise ConfigError(str(error)) from None
    return uri
