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
class ModelLocation:
    """Where a model URI's files are, and the names it is known by."""

    location: str
    name: str
    version: str


def describe_model(uri: str, store_uri: str, workdir: str | Path) -> ModelUnderTest:
    """Read the model's MLmodel and check it is a Datamint model, then fetch the model into ``workdir`` (a model
    folder on this machine is read where it is). Only the MLmodel file is fetched before that check, so a URI
    naming anything but a model (``file:///etc``) copies nothing. ``ConfigError`` when the URI does not resolve
    to a Datamint model. Explicit URIs throughout: nothing changes MLflow's global tracking URI."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        local = _local_model(uri)
        source = None if local is not None else locate_model(uri, store_uri)
        mlmodel = Model.load(str(local or _download(f"{source.location.rstrip('/')}/MLmodel", store_uri, workdir)))
    except (MlflowException, OSError) as error:
        reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        raise ConfigError(
            f"model={uri!r} does not resolve: {reason}. Use models:/<name>/<version>, "
            "models:/<name>@champion, models:/m-<id>, runs:/<run id>/<path> or a model folder (and run where the "
            "MLflow store is, or set MLFLOW_TRACKING_URI)."
        ) from None
    flavor = mlmodel.flavors.get("datamint")
    if not flavor:
        raise ConfigError(f"model={uri!r} is not a Datamint model (its MLmodel has no 'datamint' flavor).")
    if source is None:
        name, version = local.resolve().name, ""
    else:
        try:
            local = _download(source.location, store_uri, workdir)
        except (MlflowException, OSError) as error:
            raise ConfigError(f"model={uri!r}: cannot download it: {str(error).splitlines()[0][:300]}") from None
        name, version = source.name or local.name, source.version
    labels = [spec["identifier"] for spec in flavor.get("annotation_specs") or []]
    return ModelUnderTest(
        uri,
        getattr(mlmodel, "model_id", None),
        flavor.get("task_type", ""),
        labels,
        list(flavor.get("supported_modes") or []),
        str(local),
        name,
        version,
    )


def _local_model(uri: str) -> Path | None:
    """The model folder a local path or ``file:`` URI names (it must hold an MLmodel file); None for other URIs."""
    from mlflow.utils.file_utils import local_file_uri_to_path
    from mlflow.utils.uri import is_local_uri

    if "://" in uri and not uri.startswith("file:"):
        return None
    if uri.startswith("file:"):
        path = Path(local_file_uri_to_path(uri))
    elif Path(uri).exists() or is_local_uri(uri):
        path = Path(uri)
    else:
        return None
    if not (path / "MLmodel").is_file():
        raise OSError(f"{path} is not an MLflow model folder (it has no MLmodel file)")
    return path


def locate_model(uri: str, store_uri: str) -> ModelLocation:
    """Where a model URI's files are. ``models:/`` and ``runs:/`` URIs are resolved with a client of ``store_uri``:
    MLflow's own resolution reads the global tracking/registry URI whatever ``download_artifacts`` is given."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    client = MlflowClient(store_uri, registry_uri=store_uri)
    if uri.startswith("models:/m-") and "/" not in uri[len("models:/") :]:  # a LoggedModel by id
        logged = client.get_logged_model(uri[len("models:/") :])
        return ModelLocation(logged.artifact_location, logged.name, "")
    if uri.startswith("models:/"):
        name, version = get_model_name_and_version(client, uri)
        return ModelLocation(client.get_model_version_download_uri(name, version), name, str(version))
    if uri.startswith("runs:/"):  # likewise: MLflow would open the default store to find the run
        run_id, _, path = uri[len("runs:/") :].partition("/")
        return ModelLocation(f"{client.get_run(run_id).info.artifact_uri}/{path}", path.rsplit("/", 1)[-1], "")
    return ModelLocation(uri, "", "")


def _download(location: str, store_uri: str, workdir: str | Path) -> Path:
    from mlflow.artifacts import download_artifacts

    destination = Path(workdir) / str(len(list(Path(workdir).iterdir())))
    return Path(download_artifacts(artifact_uri=location, dst_path=str(destination), tracking_uri=store_uri))
