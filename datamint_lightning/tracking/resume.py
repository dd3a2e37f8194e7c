"""Resuming a run: find its last checkpoint (local, else downloaded from the run) and check it fits the task and
the data: a run continues only on the project and split it trained on, so its inputs and lineage stay true."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamint_lightning.errors import ConfigError, TrackingError
from datamint_lightning.tracking import tags as T


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed training continues: the run and its checkpoint (and the folder it was written to)."""

    run_id: str
    checkpoint_path: str
    checkpoint_dir: str | None  # the original checkpoint folder when it is still on this machine


def find_resume_point(tracking_uri: str, run_id: str, task: str, download_dir: str | Path) -> ResumePoint:
    """The last checkpoint of ``run_id``; clear errors for an unknown run, another task or no checkpoint."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from datamint_lightning.tracking.tracking_uri import redact

    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise TrackingError(f"Cannot resume: there is no run {run_id!r} in {redact(tracking_uri)}.") from None
    tags = run.data.tags
    if tags.get(T.TASK) and tags[T.TASK] != task:
        raise ConfigError(f"Cannot resume run {run_id} with {task}: it was trained by {tags[T.TASK]}.")
    # Only last.ckpt can continue a training: best checkpoints are kept as weights only (no optimizer state).
    folder, last = tags.get(T.CHECKPOINT_DIR), tags.get(T.CHECKPOINT_LAST)
    if not last:
        raise TrackingError(
            f"Cannot resume run {run_id}: it has no last checkpoint (no {T.CHECKPOINT_LAST} tag; "
            "it ended before its first epoch was saved). Start a new training instead."
        )
    if folder and (Path(folder) / Path(last).name).is_file():
        return ResumePoint(run_id, str(Path(folder) / Path(last).name), folder)
    Path(download_dir).mkdir(parents=True, exist_ok=True)
    return ResumePoint(run_id, client.download_artifacts(run_id, last, str(download_dir)), None)


def check_same_data(
    tracking_uri: str, run_id: str, project_id: str, project_name: str, datasets: dict[str, Any]
) -> None:
    """``ConfigError`` naming what differs when run ``run_id`` trained on another project or another split than
    this configuration gives (``datasets``: context -> MLflow dataset, compared by name and content digest with
    the run's logged inputs)."""
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri).get_run(run_id)
    tags = run.data.tags
    differences = []
    if tags.get(T.PROJECT_ID) and tags[T.PROJECT_ID] != project_id:
        differences.append(
            f"project {tags.get(T.PROJECT_NAME)!r} (id {tags[T.PROJECT_ID]}) is now {project_name!r} (id {project_id})"
        )
    logged = {}
    for entry in run.inputs.dataset_inputs if run.inputs else []:
        context = next((t.value for t in entry.tags if t.key == "mlflow.data.context"), None)
        if context:
            logged[context] = (entry.dataset.name, entry.dataset.digest)
    if logged:  # runs that logged no inputs (written before lineage) are compared by project only
        now = {context: (dataset.name, dataset.digest) for context, dataset in datasets.items()}
        for context in sorted(set(logged) | set(now)):
            if logged.get(context) != now.get(context):
                was, is_now = logged.get(context), now.get(context)
                differences.append(
                    f"{context} split {'%s (digest %s)' % was if was else 'none'} is now "
                    f"{'%s (digest %s)' % is_now if is_now else 'none'}"
                )
    if differences:
        raise ConfigError(
            f"Cannot resume run {run_id} on other data: {'; '.join(differences)}. A resumed run continues on the "
            "project and split it trained on (its params data.project, data.split and data.seed); set them "
            "back, or start a new run without resume=."
        )


def check_checkpoint(path: str, module, task: str, run_id: str | None = None) -> dict[str, Any]:
    """Load ``path`` safely (``weights_only=True``) and check it was written for this task and network."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise ConfigError(f"Cannot read checkpoint {path} safely (weights_only=True): {error}") from None
    states = [s for k, s in (checkpoint.get("callbacks") or {}).items() if "MLflowModelCheckpoint" in str(k)]
    written_by = next((s.get("datamint_task") for s in states if s.get("datamint_task")), None)
    if written_by and written_by != task:
        raise ConfigError(f"Checkpoint {path} was written by {written_by}, not {task}.")
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in (checkpoint.get("state_dict") or {}).items()}
    if expected != found:
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise ConfigError(
            f"Checkpoint {path} does not fit this model (another task or network?): "
            f"{len(missing)} missing, {len(extra)} unexpected, {len(reshaped)} reshaped weights "
            f"(e.g. {(missing + extra + reshaped)[:3]})."
        )
    return checkpoint


def record_resume(client, run_id: str, flat_params: dict[str, str], checkpoint: str, step: int) -> dict:
    """Log new params, record changed ones as a tag (params are immutable), count the resume; reopen the run."""
    from mlflow.entities import Param

    run = client.get_run(run_id)
    old = run.data.params
    new = [Param(k, v) for k, v in flat_params.items() if k not in old]
    for start in range(0, len(new), 100):
        client.log_batch(run_id, params=new[start : start + 100])
    changed = {k: {"was": old[k], "now": v} for k, v in flat_params.items() if k in old and old[k] != v}
    count = int(run.data.tags.get(T.RESUME_COUNT, "0")) + 1
    client.set_tag(run_id, T.RESUME_COUNT, str(count))
    client.set_tag(run_id, f"resume.{count}.checkpoint", Path(checkpoint).name)
    client.set_tag(run_id, f"resume.{count}.from_step", str(step))
    if changed:
        client.set_tag(run_id, f"resume.{count}.changed_params", json.dumps(changed)[:5000])
    client.update_run(run_id, status="RUNNING")
    return changed
