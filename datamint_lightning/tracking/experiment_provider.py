"""One MLflow experiment per project, and the ``mlflow.default_experiment_provider`` plugin that selects it.

MLflow asks registered providers, in order (its Databricks provider first, then entry points), only when no
experiment was chosen (``mlflow.set_experiment``, ``MLFLOW_EXPERIMENT_NAME``/``_ID`` win). Ours is in context
when a project is active (``set_project`` or ``DATAMINT_PROJECT_ID``/``DATAMINT_PROJECT_NAME``).
"""

from __future__ import annotations

from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

from datamint_lightning.tracking.mlflow_setup import active_project


def project_experiment_id(client, name: str, project_id: str | None, project_name: str | None,
                          artifact_location: str | None = None) -> str:
    """The id of experiment ``name`` tagged with the project's id and name, created when missing."""
    tags = {k: v for k, v in (("datamint.project_id", project_id), ("datamint.project_name", project_name)) if v}
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location, tags=tags)
        except Exception:  # a concurrent process created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    for key, value in tags.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


class ProjectExperimentProvider(DefaultExperimentProvider):
    """Sends ``mlflow.start_run()`` without an experiment to the active project's experiment."""

    def in_context(self) -> bool:
        return active_project() is not None

    def get_experiment_id(self) -> str:
        from mlflow import MlflowClient, get_tracking_uri

        from datamint_lightning.tracking.tracking_uri import default_artifact_location

        project = active_project()
        uri = get_tracking_uri()
        return project_experiment_id(MlflowClient(uri), project.experiment_name, project.id, project.name,
                                     default_artifact_location(uri))
