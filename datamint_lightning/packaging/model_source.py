"""Finding a packaged model by URI: fetched from an explicit MLflow store (never MLflow's global URIs) and its
``MLmodel`` read, so every check against it runs before any weights are loaded. Used by ``evaluate``, ``predict``
and ``export``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datamint_lightning.errors import ConfigError


@dataclass
class ModelUnderTest:
    """What the model's MLmodel says: enough to check it against a project before loading any weights."""

    uri: str
    model_id: str | None
    task_type: str
    labels: list[str]
    supported_modes: list[str]
    local_path: str  # the model's folder on this machine
    name: str = ""  # the registered model's name (else the LoggedModel's or the folder's)
    version: str = ""  # the registered version ("" when the URI names no registered version)


@dataclass(frozen=True)
class FetchedModel:
    path: Path
    name: str
    version: str


def describe_model(uri: str, store_uri: str, workdir: str | Path) -> ModelUnderTest:
    """Fetch the model from the store into ``workdir`` and read its MLmodel; ``ConfigError`` when the URI does not
    resolve or is not a Datamint model. Explicit URIs throughout: nothing changes MLflow's global tracking URI."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        if Path(uri).is_dir():
            fetched = FetchedModel(Path(uri), Path(uri).resolve().name, "")
        else:
            fetched = fetch_model(uri, store_uri, workdir)
        mlmodel = Model.load(str(fetched.path))
    except (MlflowException, OSError) as error:
        reason = str(error).splitlines()[0][:300]
        raise ConfigError(
            f"model={uri!r} does not resolve: {reason}. Use models:/<name>/<version>, "
            "models:/<name>@champion, models:/m-<id> or runs:/<run id>/<path> (and run where the "
            "MLflow store is, or set MLFLOW_TRACKING_URI)."
        ) from None
    flavor = mlmodel.flavors.get("datamint")
    if not flavor:
        raise ConfigError(f"model={uri!r} is not a Datamint model (its MLmodel has no 'datamint' flavor).")
    labels = [spec["identifier"] for spec in flavor.get("annotation_specs") or []]
    return ModelUnderTest(
        uri,
        getattr(mlmodel, "model_id", None),
        flavor.get("task_type", ""),
        labels,
        list(flavor.get("supported_modes") or []),
        str(fetched.path),
        fetched.name,
        fetched.version,
    )


def fetch_model(uri: str, store_uri: str, workdir: str | Path) -> FetchedModel:
    """Download a model by URI. ``models:/`` and ``runs:/`` URIs are resolved with a client of ``store_uri`` first:
    MLflow's own resolution reads the global tracking/registry URI whatever ``download_artifacts`` is given."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    client = MlflowClient(store_uri, registry_uri=store_uri)
    location, name, version = uri, "", ""
    if uri.startswith("models:/m-") and "/" not in uri[len("models:/") :]:  # a LoggedModel by id
        logged = client.get_logged_model(uri[len("models:/") :])
        location, name = logged.artifact_location, logged.name
    elif uri.startswith("models:/"):
        name, version = get_model_name_and_version(client, uri)
        location = client.get_model_version_download_uri(name, version)
    elif uri.startswith("runs:/"):  # likewise: MLflow would open the default store to find the run
        run_id, _, path = uri[len("runs:/") :].partition("/")
        location, name = f"{client.get_run(run_id).info.artifact_uri}/{path}", path.rsplit("/", 1)[-1]
    destination = Path(workdir) / str(len(list(Path(workdir).iterdir())))
    local = Path(download_artifacts(artifact_uri=location, dst_path=str(destination), tracking_uri=store_uri))
    return FetchedModel(local, name or local.name, str(version))
