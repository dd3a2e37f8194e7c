"""One MLflow experiment per project (found by project id), and the ``mlflow.default_experiment_provider``
plugin that selects it.

An experiment belongs to a project through its ``datamint.project_id`` tag, and carries the name it was asked for
as ``datamint.experiment_name``. It is stored under that name when the name is free; when another project
already has it, as ``<name> (<project id>)``: two projects with one name never share an experiment, and an
experiment's tags are never rewritten by another project.

MLflow asks registered providers, in order (its Databricks provider first, then entry points), only when no
experiment was chosen (``mlflow.set_experiment``, ``MLFLOW_EXPERIMENT_NAME``/``_ID`` win). Ours is in context
when a project is active (``set_project`` or ``DATAMINT_PROJECT_ID``/``DATAMINT_PROJECT_NAME``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

from datamint_lightning.tracking import tags as T
from datamint_lightning.tracking.mlflow_setup import active_project

PROJECT_ID_TAG = "datamint.project_id"
PROJECT_NAME_TAG = "datamint.project_name"
EXPERIMENT_NAME_TAG = "datamint.experiment_name"


def find_project_experiment(search: Callable[[str], list], name: str, project_id: str) -> Any | None:
    """The experiment of project ``project_id`` asked for as ``name``; ``search(filter_string)`` lists
    experiments (an ``MlflowClient``'s or a store's ``search_experiments``)."""
    if "'" in str(project_id):
        raise ValueError(f"project id {project_id!r} must not contain quotes.")
    for experiment in search(f"tags.`{PROJECT_ID_TAG}` = '{project_id}'"):
        if experiment.tags.get(EXPERIMENT_NAME_TAG, experiment.name) == name:
            return experiment
    return None


def scoped_experiment_name(name: str, project_id: str, name_taken: bool) -> str:
    """The name to store a project's experiment under: ``name``, or ``name (project id)`` when it is taken."""
    return f"{name} ({project_id})" if name_taken else name


def project_experiment_id(
    client, name: str, project_id: str | None, project_name: str | None, artifact_location: str | None = None
) -> str:
    """The id of project ``project_id``'s experiment ``name``, created when missing (by name alone when the
    project has no id)."""
    tags = {k: v for k, v in ((PROJECT_ID_TAG, project_id), (PROJECT_NAME_TAG, project_name)) if v}
    tags[T.EXPERIMENT_KIND] = T.MODEL_TRAINING_KIND

    def search(filter_string: str) -> list:
        return client.search_experiments(filter_string=filter_string, max_results=1000)

    for attempt in range(2):  # a concurrent process may create it between our look-up and our create
        if project_id:
            experiment = find_project_experiment(search, name, project_id)
            stored = scoped_experiment_name(name, project_id, client.get_experiment_by_name(name) is not None)
        else:
            experiment, stored = client.get_experiment_by_name(name), name
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(
                stored, artifact_location, tags={**tags, **({EXPERIMENT_NAME_TAG: name} if project_id else {})}
            )
        except Exception:
            if attempt:
                raise
    raise AssertionError("unreachable")


class DatamintExperimentProvider(DefaultExperimentProvider):
    """Sends ``mlflow.start_run()`` without an experiment to the active project's experiment."""

    def in_context(self) -> bool:
        return active_project() is not None

    def get_experiment_id(self) -> str:
        from mlflow import MlflowClient, get_tracking_uri

        from datamint_lightning.tracking.tracking_uri import default_artifact_location

        project = active_project()
        uri = get_tracking_uri()
        return project_experiment_id(
            MlflowClient(uri), project.experiment_name, project.id, project.name, default_artifact_location(uri)
        )


# The name the entry point of installs made before the rename points to (their metadata is not rewritten
# until the package is reinstalled).
ProjectExperimentProvider = DatamintExperimentProvider
