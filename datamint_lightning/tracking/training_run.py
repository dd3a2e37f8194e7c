"""The MLflow run of one training: experiment per project, params, config artifacts, final status."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from datamint_lightning.tracking.tracking_uri import default_artifact_location, redact

RUN_ID_ENV = "DATAMINT_LIGHTNING_RUN_ID"  # lets DDP worker processes join rank zero's run
MAX_PARAM_LENGTH = 6000


def flatten(values: Any, prefix: str = "") -> dict[str, str]:
    """Nested config to ``{"data.batch_size": "16", ...}`` (lists stay whole, as MLflow params are strings)."""
    if isinstance(values, dict):
        flat: dict[str, str] = {}
        for key, value in values.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    text = str(values)
    return {prefix[:-1]: text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."}


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("datamint-lightning", "torch", "lightning", "segmentation-models-pytorch", "mlflow", "monai"):
        try:
            versions[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


@dataclass
class TrainingRun:
    """An MLflow run opened for one training (by rank zero; other ranks only read ``run_id``)."""

    tracking_uri: str
    experiment_id: str
    run_id: str

    @classmethod
    def start(cls, tracking_uri: str, experiment_name: str, run_name: str | None,
              experiment_tags: dict[str, str], run_tags: dict[str, str]) -> "TrainingRun":
        from mlflow import MlflowClient

        from datamint_lightning.tracking.experiment_provider import project_experiment_id

        client = MlflowClient(tracking_uri)
        experiment_id = project_experiment_id(client, experiment_name, experiment_tags.get("datamint.project_id"),
                                              experiment_tags.get("datamint.project_name"),
                                              default_artifact_location(tracking_uri))
        tags = {"host": socket.gethostname(), "user": getpass.getuser(), "python": platform.python_version(),
                **_versions(), **run_tags}
        if os.environ.get("DATAMINT_LIGHTNING_PARENT_RUN_ID"):  # a Hydra sweep's child (tracking.sweep_callback)
            tags["mlflow.parentRunId"] = os.environ["DATAMINT_LIGHTNING_PARENT_RUN_ID"]
        commit = _git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        return cls(tracking_uri, experiment_id, run.info.run_id)

    @classmethod
    def reopen(cls, tracking_uri: str, run_id: str) -> "TrainingRun":
        """An existing run (resume, DDP workers)."""
        from mlflow import MlflowClient

        run = MlflowClient(tracking_uri).get_run(run_id)
        return cls(tracking_uri, run.info.experiment_id, run_id)

    @property
    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri)

    def log_config(self, resolved: dict[str, Any], yaml_text: str, overrides: list[str],
                   params: bool = True, artifact_dir: str | None = None) -> None:
        """Params (unless ``params`` is False, as on resume) and ``config.yaml`` + ``overrides.txt``."""
        from mlflow.entities import Param

        if params:
            flat = [Param(k, v) for k, v in flatten(resolved).items()]
            for start in range(0, len(flat), 100):
                self.client.log_batch(self.run_id, params=flat[start:start + 100])
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "config.yaml").write_text(yaml_text)
            (Path(folder) / "overrides.txt").write_text("\n".join(overrides) + "\n")
            self.client.log_artifacts(self.run_id, folder, artifact_dir)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value)[:5000])

    def finish(self, status: str = "FINISHED", error: BaseException | None = None) -> None:
        if error is not None:
            self.client.set_tag(self.run_id, "error", f"{type(error).__name__}: {error}"[:5000])
        self.client.set_terminated(self.run_id, status)

    def describe(self) -> str:
        return f"run {self.run_id} in experiment {self.experiment_id} at {redact(self.tracking_uri)}"


def join_or_start_run(tracking_uri: str, experiment_name: str, run_name: str | None,
                      experiment_tags: dict[str, str], run_tags: dict[str, str],
                      resume_run_id: str | None = None) -> tuple[TrainingRun, bool]:
    """Rank zero starts the run (or reopens ``resume_run_id``) and exports its id; DDP workers started later
    join it. Returns (run, owner)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    existing = os.environ.get(RUN_ID_ENV)
    if existing and getattr(rank_zero_only, "rank", 0) != 0:
        return TrainingRun.reopen(tracking_uri, existing), False
    if resume_run_id:
        run = TrainingRun.reopen(tracking_uri, resume_run_id)
    else:
        run = TrainingRun.start(tracking_uri, experiment_name, run_name, experiment_tags, run_tags)
    os.environ[RUN_ID_ENV] = run.run_id
    return run, True
