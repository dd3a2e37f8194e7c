"""Registering a checked package in the MLflow model registry, with tags and a ``champion`` alias that moves
only when the new version beats the current champion (MLflow reserves the alias ``latest``:
``models:/<name>/latest`` already names the newest version)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from datamint_lightning.errors import ConfigError, PackagingError
from datamint_lightning.packaging.packager import PackagedModel

POLICIES = ("better", "better_or_equal", "always", "never")
CHAMPION = "champion"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    champion: bool
    reason: str  # why the champion alias moved or stayed


def validate_model_name(name: str) -> None:
    """Reject, before training, a registered model name MLflow would refuse (empty, '/', ':', '..')."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException as error:
        raise ConfigError(f"packaging.registered_model_name={name!r} is not a valid MLflow registered model "
                          f"name: {error.message}") from None


def beats(score: float | None, champion_score: float | None, mode: str, policy: str) -> tuple[bool, str]:
    """Whether a version with ``score`` takes the champion alias from one with ``champion_score``, and why."""
    if policy not in POLICIES:
        raise ConfigError(f"packaging.champion.policy={policy!r}; expected one of {', '.join(POLICIES)}.")
    if policy in ("always", "never"):
        return policy == "always", f"policy {policy}"
    if champion_score is None or math.isnan(champion_score):
        return True, "no comparable champion score"
    if score is None or math.isnan(score):
        return False, "the new version has no score"
    better = score > champion_score if mode == "max" else score < champion_score
    tie = score == champion_score and policy == "better_or_equal"
    return better or tie, f"{score:.6g} vs champion {champion_score:.6g} ({mode}, {policy})"


def register(packaged: PackagedModel, name: str, tags: dict[str, str], score: float | None = None,
             mode: str = "max", metric: str = "score", policy: str = "better") -> RegisteredVersion:
    """Register the package under ``name`` with ``tags`` and the ``score`` on ``metric``; move ``champion`` when
    ``beats`` says so (a champion scored on another metric counts as not comparable)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    scored = {"champion.metric": metric, "champion.mode": mode,
              **({"score": f"{score:.6g}"} if score is not None else {})}
    try:
        version = mlflow.register_model(packaged.model_uri, name, tags={**tags, **scored})
        if packaged.model_id:
            client.set_model_version_tag(name, version.version, "datamint.logged_model_id", packaged.model_id)
        try:
            current = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            current = None
        champion_score = None
        if current is not None and current.tags.get("champion.metric") == metric and "score" in current.tags:
            champion_score = float(current.tags["score"])
        move, reason = (True, "first version") if current is None else beats(score, champion_score, mode, policy)
        if move:
            client.set_registered_model_alias(name, CHAMPION, version.version)
    except MlflowException as error:
        raise PackagingError(f"Could not register the model as {name!r}: {error.message}") from error
    return RegisteredVersion(name, str(version.version), move, reason)
