"""``datamint://`` tracking URIs: an MLflow REST store scoped to the active project, and its artifact repository.

``datamint://host[/path]`` talks HTTPS to ``host``; ``datamint+http://host:port`` and ``datamint+https://host``
name the transport; ``datamint://`` alone reads the server from ``DATAMINT_API_URL``. The API key comes from
``DATAMINT_API_KEY`` only (never the URI), travels as a bearer token, and is never logged or recorded. The stores
and the repository are MLflow plugins registered for these schemes only (pyproject.toml entry points): unlike the
official SDK, plain ``http(s)`` URIs stay MLflow's own.

A server proxying artifacts answers ``mlflow-artifacts:/<path>`` locations, which MLflow resolves only against an
``http(s)`` tracking URI; the store hands them out as ``datamint:/<path>``, which ``DatamintArtifactsRepository``
resolves against the Datamint server with the API key.
"""

from __future__ import annotations

from mlflow.entities import ExperimentTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
from mlflow.store.model_registry.rest_store import RestStore as RestRegistryStore
from mlflow.store.tracking.rest_store import RestStore
from mlflow.utils.rest_utils import MlflowHostCreds

from datamint_lightning.tracking.datamint_uri import host_creds, server_url
from datamint_lightning.tracking.experiment_provider import (
    EXPERIMENT_NAME_TAG,
    PROJECT_ID_TAG,
    find_project_experiment,
    scoped_experiment_name,
)
from datamint_lightning.tracking.mlflow_setup import active_project

ARTIFACT_SCHEME = "datamint"
PROXIED_SCHEME = "mlflow-artifacts"


def _datamint_artifacts(uri: str | None) -> str | None:
    if uri and uri.startswith(PROXIED_SCHEME + ":"):
        return ARTIFACT_SCHEME + uri[len(PROXIED_SCHEME) :]
    return uri


class DatamintStore(RestStore):
    """MLflow REST tracking store for a Datamint server; experiments are created and found per project id."""

    def __init__(self, store_uri: str, artifact_uri: str | None = None, force_valid: bool = True):
        host_creds(store_uri)  # fail now, with one message, rather than at the first request
        self.store_uri = store_uri
        super().__init__(lambda: host_creds(store_uri))

    @staticmethod
    def _project_id(project_id: str | None, tags: dict[str, str] | None = None) -> str | None:
        project = active_project()
        return project_id or (tags or {}).get(PROJECT_ID_TAG) or (project.id if project else None)

    def create_experiment(self, name, artifact_location=None, tags=None, project_id: str | None = None) -> str:
        """Create experiment ``name`` of the project (``project_id``, else the active one); it fails when the
        project already has it. Another project's experiment of that name is left alone: this one is stored as
        ``name (project id)``."""
        tag_map = {t.key: t.value for t in tags or []}
        project_id = self._project_id(project_id, tag_map)
        if not project_id:
            return super().create_experiment(name, artifact_location, tags)
        requested = tag_map.get(EXPERIMENT_NAME_TAG, name)
        if find_project_experiment(self._search, requested, project_id) is not None:
            raise MlflowException(
                f"Project {project_id} already has an experiment named {requested!r}.", RESOURCE_ALREADY_EXISTS
            )
        stored = scoped_experiment_name(requested, project_id, super().get_experiment_by_name(requested) is not None)
        tag_map.update({PROJECT_ID_TAG: project_id, EXPERIMENT_NAME_TAG: requested})
        return super().create_experiment(stored, artifact_location, [ExperimentTag(k, v) for k, v in tag_map.items()])

    def get_experiment_by_name(self, experiment_name, project_id: str | None = None):
        """The project's experiment ``experiment_name`` (``project_id``, else the active project), or None."""
        project_id = self._project_id(project_id)
        if not project_id:
            return super().get_experiment_by_name(experiment_name)
        return find_project_experiment(self._search, experiment_name, project_id)

    def _search(self, filter_string: str) -> list:
        found, token = [], None
        while True:
            page = self.search_experiments(filter_string=filter_string, max_results=1000, page_token=token)
            found += list(page)
            token = page.token
            if not token:
                return found

    # Artifact locations: mlflow-artifacts:/ (resolvable only against http(s)) -> datamint:/ (our repository).
    def get_run(self, run_id):
        return self._relocate_run(super().get_run(run_id))

    def create_run(self, *args, **kwargs):
        return self._relocate_run(super().create_run(*args, **kwargs))

    def get_logged_model(self, *args, **kwargs):
        return self._relocate_model(super().get_logged_model(*args, **kwargs))

    def create_logged_model(self, *args, **kwargs):
        return self._relocate_model(super().create_logged_model(*args, **kwargs))

    @staticmethod
    def _relocate_run(run):
        info = getattr(run, "info", run)
        info._artifact_uri = _datamint_artifacts(info._artifact_uri)
        return run

    @staticmethod
    def _relocate_model(model):
        model._artifact_location = _datamint_artifacts(model._artifact_location)
        return model


class DatamintRegistryStore(RestRegistryStore):
    """MLflow REST model registry of a Datamint server (same credentials, same artifact relocation)."""

    def __init__(self, store_uri: str, tracking_uri: str | None = None):
        host_creds(store_uri)
        super().__init__(lambda: host_creds(store_uri))

    def get_model_version_download_uri(self, name, version):
        return _datamint_artifacts(super().get_model_version_download_uri(name, version))


class DatamintArtifactsRepository(MlflowArtifactsRepository):
    """``datamint:/<path>`` artifacts, proxied by the Datamint server named by the tracking URI."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
        from mlflow.tracking._tracking_service.utils import get_tracking_uri

        self._tracking_uri = tracking_uri or get_tracking_uri()
        super().__init__(artifact_uri, self._tracking_uri, registry_uri)

    @classmethod
    def resolve_uri(cls, artifact_uri: str, tracking_uri: str) -> str:
        """``datamint:/<path>`` -> ``https://<server>/api/2.0/mlflow-artifacts/artifacts/<path>``."""
        proxied = (
            PROXIED_SCHEME + artifact_uri[len(ARTIFACT_SCHEME) :]
            if artifact_uri.startswith(ARTIFACT_SCHEME + ":")
            else artifact_uri
        )
        return MlflowArtifactsRepository.resolve_uri(proxied, server_url(tracking_uri))

    @property
    def _host_creds(self) -> MlflowHostCreds:
        return MlflowHostCreds(self.artifact_uri, token=host_creds(self._tracking_uri).token)

    @property
    def _artifact_server_host_creds(self) -> MlflowHostCreds:
        root = self.artifact_uri.partition("/api/2.0/mlflow-artifacts/artifacts")[0]
        return MlflowHostCreds(root.rstrip("/"), token=host_creds(self._tracking_uri).token)
