"""Registering a checked package in the MLflow model registry, with tags and a ``champion`` alias that moves
only when the new version beats the current champion (MLflow reserves the alias ``latest``:
``models:/<name>/latest`` already names the newest version)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from datamint_lightning.errors import ConfigError, PackagingError

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
        raise ConfigError(
            f"packaging.registered_model_name={name!r} is not a valid MLflow registered model name: {error.message}"
        ) from None


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


def register(
    tracking_uri: str,
    model_uri: str,
    model_id: str | None,
    name: str,
    tags: dict[str, str],
    score: float | None = None,
    mode: str = "max",
    metric: str = "score",
    policy: str = "better",
    run_id: str | None = None,
    description: str | None = None,
) -> RegisteredVersion:
    """Register ``model_uri`` under ``name`` with ``tags`` and the ``score`` on ``metric``; move ``champion`` when
    ``beats`` says so (a champion scored on another metric counts as not comparable).

    Idempotent per run: when a version of ``name`` from ``run_id`` exists already (a resumed or replayed end of
    fit), that version is completed (tags, description, aliases) instead of a second one being created.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    scored = {
        "champion.metric": metric,
        "champion.mode": mode,
        **({"score": f"{score:.6g}"} if score is not None else {}),
    }
    all_tags = {**tags, **scored, **({"datamint.logged_model_id": model_id} if model_id else {})}
    try:
        _ensure_registered_model(client, name)
        version = _version_of_run(client, name, run_id) if run_id else None
        if version is None:
            # the logged model's own location: resolving models:/<id> would ask MLflow's global store instead
            source = client.get_logged_model(model_id).artifact_location if model_id else model_uri
            version = client.create_model_version(
                name, source, run_id=run_id, tags=all_tags, description=description, model_id=model_id
            )
        else:
            for key, value in all_tags.items():
                client.set_model_version_tag(name, version.version, key, value)
            if description:
                client.update_model_version(name, version.version, description=description)
        try:
            current = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            current = None
        champion_score = None
        if current is not None and current.tags.get("champion.metric") == metric and "score" in current.tags:
            champion_score = float(current.tags["score"])
        if current is not None and current.version == version.version:
            move, reason = True, "already champion"
        elif current is None:
            move, reason = True, "first version"
        else:
            move, reason = beats(score, champion_score, mode, policy)
        if move:
            client.set_registered_model_alias(name, CHAMPION, version.version)
    except MlflowException as error:
        raise PackagingError(f"Could not register the model as {name!r}: {error.message}") from error
    return RegisteredVersion(name, str(version.version), move, reason)


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name)
        except MlflowException:  # created concurrently
            client.get_registered_model(name)


def _version_of_run(client, name: str, run_id: str):
    versions = client.search_model_versions(f"name = '{_quote(name)}' and run_id = '{run_id}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _quote(name: str) -> str:
    return name.replace("'", "\\'")
