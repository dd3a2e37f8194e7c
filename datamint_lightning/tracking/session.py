"""``TrackedRun``: one training's MLflow run, owned by a context manager from start to final status.

Everything that can be decided without a run is decided first, in a ``RunPlan`` (the store is checked, the resume
target found, the config recorded with secrets redacted). Entering the ``TrackedRun`` starts the run (or re-joins
it: resume, DDP workers), logs the config and dataset inputs, and opens the recorder (offline journal) and the
Lightning logger; leaving it always ends the run: FINISHED, FAILED with the error tagged, or KILLED (Ctrl+C,
SIGTERM). No code path leaves a run RUNNING.

Credentials in the tracking URI never leave the process: MLflow gets the URI without them and the credentials
through its ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` variables, set only while the run is open.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from datamint_lightning.tracking import tags as T
from datamint_lightning.tracking.tracking_uri import redact, redact_text, split_credentials

log = logging.getLogger(__name__)

RUN_ID_ENV = "DATAMINT_LIGHTNING_RUN_ID"  # lets DDP worker processes join rank zero's run
PARENT_RUN_ENV = "DATAMINT_LIGHTNING_PARENT_RUN_ID"  # set by a sweep: its trainings become child runs
MAX_PARAM_LENGTH = 6000
CONSOLE_LOG = "console.log"
RUN_ID_FILE = "mlflow_run_id"  # in the run directory: how ranks started by torchrun/SLURM find rank zero's run
# MLflow retries a failing HTTP call for ~4 minutes by default; during training a dead server must cost seconds
# (records go to the offline journal instead). Explicit user settings are kept.
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


def flatten(values: Any, prefix: str = "") -> dict[str, str]:
    """Nested config to ``{"data.batch_size": "16", ...}`` (lists stay whole, as MLflow params are strings)."""
    if isinstance(values, dict):
        flat: dict[str, str] = {}
        for key, value in values.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    text = str(values)
    return {prefix[:-1]: text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."}


@dataclass
class RunPlan:
    """What the run will be, all decided (and checked) before it exists."""

    tracking_uri: str  # as configured (may hold credentials; never logged)
    experiment_name: str
    project_id: str
    project_name: str
    run_name: str
    task: str  # the TaskTrainer class name (resume refuses another task's run)
    output_dir: str
    config: dict[str, Any]  # resolved, secrets redacted
    config_yaml: str
    overrides: list[str]  # redacted
    description: str = ""
    resume_run_id: str | None = None
    resume_checkpoint: str | None = None
    resume_step: int = 0
    datasets: Callable[[], dict[str, Any]] | None = None  # context -> MLflow Dataset, logged as run inputs
    retry_interval: float = 30.0
    extra_tags: dict[str, str] = field(default_factory=dict)


class TrackedRun:
    """``with TrackedRun(plan) as run:`` the run is open; on exit it has its final status, whatever happened."""

    def __init__(self, plan: RunPlan):
        self.plan = plan
        self.tracking_uri, self._credentials = split_credentials(plan.tracking_uri)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.owner = False
        self.recorder = None
        self.logger = None
        self.status = "FAILED"
        self._stack = contextlib.ExitStack()

    # ---- the context -----------------------------------------------------------------------------------------
    def __enter__(self) -> TrackedRun:
        self._stack.enter_context(_scoped_environment(self._credential_env()))
        self._stack.enter_context(_scoped_environment(HTTP_BOUNDS, keep_existing=True))
        self._stack.enter_context(_scoped_mlflow_uri(self.tracking_uri))
        try:
            self._open()
        except BaseException as error:
            if self.run_id and self.owner:
                self._end(error)
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type, error, traceback) -> bool:
        try:
            self._end(error)
        finally:
            self._stack.close()
        return False

    def _open(self) -> None:
        from lightning.fabric.utilities.rank_zero import rank_zero_only
        from mlflow import MlflowClient

        from datamint_lightning.tracking.mlflow_logger import ResilientMLFlowLogger
        from datamint_lightning.tracking.offline_journal import JOURNAL_NAME
        from datamint_lightning.tracking.run_recorder import RunRecorder

        plan = self.plan
        joined = os.environ.get(RUN_ID_ENV)
        rank = getattr(rank_zero_only, "rank", 0)
        if rank != 0:  # a DDP worker joins rank zero's run: spawned by Lightning it inherits the id, started by
            # torchrun/SLURM it reads the id rank zero writes into the (shared, explicit) run directory
            self.run_id, self.owner = joined or _wait_for_run_id(Path(plan.output_dir) / RUN_ID_FILE), False
        elif plan.resume_run_id:
            self.run_id, self.owner = plan.resume_run_id, True
        else:
            self.run_id, self.owner = self._create(), True
        if self.owner:
            _write_run_id(Path(plan.output_dir) / RUN_ID_FILE, self.run_id)
        client = MlflowClient(self.tracking_uri)
        self.experiment_id = client.get_run(self.run_id).info.experiment_id
        if self.owner:
            self._stack.enter_context(_scoped_environment({RUN_ID_ENV: self.run_id}))
            self._stack.enter_context(_console_log(Path(plan.output_dir) / CONSOLE_LOG))
            if plan.resume_run_id:
                self._record_resume(client)
            else:
                self._log_config(client, params=True, artifact_dir=None)
                self._log_inputs(client)
            self._stack.enter_context(_system_metrics(self.run_id, self.tracking_uri))
        self.recorder = RunRecorder(
            self.tracking_uri, self.run_id, Path(plan.output_dir) / JOURNAL_NAME, retry_interval=plan.retry_interval
        )
        self.logger = ResilientMLFlowLogger(self.recorder, experiment_id=self.experiment_id)
        self.logger.task = plan.task  # MLflowModelCheckpoint stamps it into checkpoints (resume checks it)
        if plan.resume_run_id and self.owner:
            self.logger.logged_through = _last_logged_steps(client, self.run_id)

    def _create(self) -> str:
        from mlflow import MlflowClient

        from datamint_lightning.tracking.experiment_provider import project_experiment_id
        from datamint_lightning.tracking.tracking_uri import default_artifact_location

        plan = self.plan
        client = MlflowClient(self.tracking_uri)
        experiment_id = project_experiment_id(
            client,
            plan.experiment_name,
            plan.project_id,
            plan.project_name,
            default_artifact_location(self.tracking_uri),
        )
        tags = {
            T.USER: getpass.getuser(),
            T.SOURCE_NAME: _source_name(),
            T.SOURCE_TYPE: "LOCAL",
            T.DESCRIPTION: plan.description,
            T.TASK: plan.task,
            T.OUTPUT_DIR: plan.output_dir,
            T.PROJECT_ID: plan.project_id,
            T.PROJECT_NAME: plan.project_name,
            "python": platform.python_version(),
            **_versions(),
            **plan.extra_tags,
        }
        commit = _git_commit()
        if commit:
            tags[T.GIT_COMMIT] = commit
        if os.environ.get(PARENT_RUN_ENV):
            tags[T.PARENT_RUN] = os.environ[PARENT_RUN_ENV]
        return client.create_run(experiment_id, run_name=plan.run_name, tags=tags).info.run_id

    def _log_config(self, client, params: bool, artifact_dir: str | None) -> None:
        from mlflow.entities import Param

        if params:
            flat = [Param(k, v) for k, v in flatten(self.plan.config).items()]
            for start in range(0, len(flat), 100):
                client.log_batch(self.run_id, params=flat[start : start + 100])
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "config.yaml").write_text(self.plan.config_yaml)
            (Path(folder) / "overrides.txt").write_text("\n".join(self.plan.overrides) + "\n")
            client.log_artifacts(self.run_id, folder, artifact_dir)

    def _log_inputs(self, client) -> None:
        from mlflow.entities import DatasetInput, InputTag

        datasets = self.plan.datasets() if self.plan.datasets else {}
        inputs = [
            DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
            for context, dataset in datasets.items()
        ]
        if inputs:
            client.log_inputs(self.run_id, datasets=inputs)

    def _record_resume(self, client) -> None:
        from datamint_lightning.tracking.resume import record_resume

        plan = self.plan
        record_resume(client, self.run_id, flatten(plan.config), plan.resume_checkpoint, plan.resume_step)
        count = client.get_run(self.run_id).data.tags[T.RESUME_COUNT]
        self._log_config(client, params=False, artifact_dir=f"resumes/{count}")

    def _end(self, error: BaseException | None) -> None:
        if not self.owner or self.run_id is None:
            return
        # Lightning turns Ctrl+C into sys.exit(1) and SIGTERM into SIGTERMException (a SystemExit).
        if error is None:
            status = "FINISHED"
        elif isinstance(error, (KeyboardInterrupt, SystemExit)):
            status = "KILLED"
        else:
            status = "FAILED"
        self.status = status
        recorder = self.recorder
        if recorder is None:  # failed while opening: talk to the store directly
            from mlflow import MlflowClient

            client = MlflowClient(self.tracking_uri)
            if error is not None:
                client.set_tag(self.run_id, T.ERROR, _error_text(error))
            client.set_terminated(self.run_id, status)
            return
        if error is not None:
            recorder.set_tags({T.ERROR: _error_text(error)})
        console = Path(self.plan.output_dir) / CONSOLE_LOG
        if console.is_file() and console.stat().st_size:
            recorder.log_artifact(console, "")
        recorder.set_terminated(status)
        if recorder.pending:
            log.warning(
                "MLflow: %d record(s) wait in %s; send them with `python -m datamint_lightning tracking replay %s`.",
                recorder.pending,
                recorder.journal.path,
                recorder.journal.path,
            )

    # ---- while open --------------------------------------------------------------------------------------------
    @property
    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.owner:
            self.recorder.set_tags(tags)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.owner:
            self.recorder.log_metrics(metrics, step)

    def describe(self) -> str:
        return f"run {self.run_id} in experiment {self.experiment_id} at {redact(self.tracking_uri)}"

    def _credential_env(self) -> dict[str, str]:
        if not self._credentials:
            return {}
        username, password = self._credentials
        return {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}


def _write_run_id(path: Path, run_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(run_id)
    os.replace(temporary, path)


def _wait_for_run_id(path: Path, timeout: float = 600.0) -> str:
    """Rank zero's run id, written after this process started (an older file is a previous training's)."""
    import time

    import psutil

    started = psutil.Process().create_time() - 5
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.stat().st_mtime >= started:
            return path.read_text().strip()
        time.sleep(0.5)
    from datamint_lightning.errors import TrackingError

    raise TrackingError(
        f"This rank waited {timeout:.0f} s for rank zero's MLflow run id in {path}; give every "
        "process the same hydra.run.dir (see the README's multi-node commands)."
    )


def _last_logged_steps(client, run_id: str) -> dict[str, int]:
    """The last step of each metric already in the run (what a resumed training must not log again)."""
    return {
        key: max(m.step for m in client.get_metric_history(run_id, key)) for key in client.get_run(run_id).data.metrics
    }


def _error_text(error: BaseException) -> str:
    return redact_text(f"{type(error).__name__}: {error}")[:5000]


@contextlib.contextmanager
def _scoped_environment(values: dict[str, str], keep_existing: bool = False):
    """Set environment variables for the duration of the block and restore what was there before."""
    saved = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if not (keep_existing and key in os.environ):
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _scoped_mlflow_uri(uri: str):
    """MLflow's fluent calls (``Model.log``, ``models:/`` loading) use its global URI: point it at this run's
    store while the run is open. Afterwards a caller's own choice is put back; a caller who had chosen none (a
    notebook) keeps this store, so ``mlflow.pyfunc.load_model("models:/...")`` right after ``fit()`` finds the
    model. The exported ``MLFLOW_*_URI`` variables are always restored."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    previous = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    previous_registry = registry_utils._registry_uri  # None unless the caller chose one
    with _scoped_environment({"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            # the registry URI always goes back (None: it follows the tracking URI), so a later
            # mlflow.set_tracking_uri elsewhere in the process is not paired with this run's registry
            mlflow.set_registry_uri(previous_registry)
            if previous is not None:
                mlflow.set_tracking_uri(previous)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


@contextlib.contextmanager
def _console_log(path: Path):
    """The run's log lines (this package's and Lightning's) in ``path``, uploaded as the run's console log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("datamint_lightning", "lightning.pytorch", "lightning.fabric")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def _system_metrics(run_id: str, tracking_uri: str):
    """CPU, memory, disk and GPU use as ``system/*`` metrics, sampled by MLflow's monitor (needs psutil)."""
    monitor = None
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop chatter per run
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=10, samples_before_logging=1, tracking_uri=tracking_uri
        )
        monitor.start()
    except Exception as error:  # psutil missing, or an unusual platform: the run goes on without them
        log.debug("System metrics are off: %s", error)
        monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()


def _source_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    return str(getattr(main, "__file__", None) or "python")


def _git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("datamint-lightning", "torch", "lightning", "segmentation-models-pytorch", "mlflow", "monai"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[f"version.{package}"] = metadata.version(package)
    return versions
