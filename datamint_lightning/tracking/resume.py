"""Resuming a run: find its last checkpoint (local, else downloaded from the run) and check it fits the task."""

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
