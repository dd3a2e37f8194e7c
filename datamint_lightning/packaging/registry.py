"""Registering a checked package in the MLflow model registry, with tags and the ``champion`` alias."""

from __future__ import annotations

import numpy as np

from datamint_lightning.errors import PackagingError
from datamint_lightning.packaging.packager import PackagedModel


def _is_better(score: float, champion: float, mode: str) -> bool:
    return score >= champion if mode == "max" else score <= champion


def register(packaged: PackagedModel, name: str, tags: dict[str, str], score: float | None = None,
             mode: str = "max") -> PackagedModel:
    """Register the package under ``name`` with ``tags``; move the ``champion`` alias when ``score`` is at least
    as good as the current champion's (``models:/<name>/latest`` always names the newest version)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        version = mlflow.register_model(packaged.model_uri, name, tags={
            **tags, **({"score": f"{score:.6g}"} if score is not None else {})})
        if packaged.model_id:
            client.set_model_version_tag(name, version.version, "datamint.logged_model_id", packaged.model_id)
        try:
            champion = client.get_model_version_by_alias(name, "champion")
            champion_score = float(champion.tags.get("score", "nan"))
        except MlflowException:
            champion, champion_score = None, float("nan")
        if champion is None or np.isnan(champion_score) or (score is not None and _is_better(score, champion_score, mode)):
            client.set_registered_model_alias(name, "champion", version.version)
    except MlflowException as error:
        raise PackagingError(f"Could not register the model as {name!r}: {error.message}") from error
    return PackagedModel(packaged.model_uri, packaged.model_id, name, str(version.version))
