"""``MLflowModelCheckpoint``: Lightning's ModelCheckpoint that mirrors every checkpoint into the MLflow run."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any
from weakref import proxy

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from datamint_lightning.tracking import tags as T
from datamint_lightning.tracking.checkpoint_files import atomic_save, link_or_copy, local_artifact_root, snapshot
from datamint_lightning.tracking.upload_worker import UploadWorker

log = logging.getLogger(__name__)


class MLflowModelCheckpoint(ModelCheckpoint):
    """Keeps ``ModelCheckpoint``'s monitor/mode/save_top_k semantics and mirrors the files to MLflow.

    It finds its run in ``setup`` from the trainer's ``MLFlowLogger`` (any Lightning script works; no extra call),
    or from ``tracking_uri``/``run_id`` given explicitly. With ``save_last`` (the default here), ``last.ckpt`` is
    rewritten at the end of *every* epoch and when training stops on an exception: Lightning itself rewrites it
    only in a step that also saved a top-k checkpoint, so once the monitored metric stops improving its
    ``last.ckpt`` stays at the best step, and a resume would retrain (and re-log) every step since.

    Checkpoint I/O is off the training thread (``background_writes``, the default): at a save point the state is
    copied to CPU memory synchronously, then one background thread writes it (to a temporary file renamed into
    place, so no reader or hard link ever sees half a file), uploads it and deletes evicted files, in order, so no
    file ever has two writers. At most ``max_pending_writes`` snapshots wait at once; a further save waits for one.
    With ``best_weights_only`` (the default) top-k files hold only the weights (what packaging reloads, with
    ``load_from_checkpoint(weights_only=True)``) and only ``last.ckpt`` keeps the optimizer state for resuming.

    Each checkpoint is queued for upload to ``<artifact_dir>/`` of the run the moment it is written; a background
    thread uploads it while training goes on (a crash or SIGKILL leaves at most the file being uploaded out of the
    run, and it stays on disk and in the offline journal). When the run's artifacts live on this machine (the
    embedded store) the "upload" is a hard link to the run-directory file, so each checkpoint exists once on
    disk (a copy only across file systems). Files that top-k evicts are deleted from the run after
    their upload, in order. Run tags ``checkpoint.best`` / ``checkpoint.last`` name the artifacts, with
    ``checkpoint.best_score`` / ``checkpoint.best_step``. Only global rank zero talks to MLflow. Uploads are
    flushed at the end of fit, on an exception and on teardown; failures are reported, never fatal.
    """

    def __init__(
        self,
        *args: Any,
        tracking_uri: str | None = None,
        run_id: str | None = None,
        artifact_dir: str = "checkpoints",
        best_weights_only: bool = True,
        background_writes: bool = True,
        max_pending_writes: int = 2,
        **kwargs: Any,
    ):
        kwargs.setdefault("auto_insert_metric_name", False)  # '=' and '/' make awkward artifact names
        kwargs.setdefault("save_last", True)
        super().__init__(*args, **kwargs)
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.artifact_dir = artifact_dir
        self.best_weights_only = best_weights_only
        self.background_writes = background_writes
        self._write_slots = threading.Semaphore(max(1, max_pending_writes))
        self._artifact_root: Path | bool | None = False  # False: not looked up yet
        self.task: str | None = None
        self.recorder = None
        self.uploaded: list[str] = []
        self.best_model_step: int | None = None
        self._last_saved_at_step: int | None = None
        self._worker = UploadWorker()

    def attach(self, tracking_uri: str, run_id: str, recorder=None, task: str | None = None) -> None:
        """Send checkpoints to ``run_id`` through ``recorder`` (a ``RunRecorder``; one is made when None)."""
        from datamint_lightning.tracking.run_recorder import RunRecorder

        self.tracking_uri, self.run_id, self.task = tracking_uri, run_id, task
        self.recorder = recorder or RunRecorder(tracking_uri, run_id, Path(self.dirpath or ".") / "journal.jsonl")

    # ---- Lightning hooks ---------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.recorder is None and trainer.is_global_zero:
            self._find_run(trainer)

    def _find_run(self, trainer) -> None:
        """The run to mirror into: an explicit ``tracking_uri``/``run_id``, else the trainer's MLflow logger's (a
        tracked run's logger brings its recorder, with the offline journal)."""
        from lightning.pytorch.loggers import MLFlowLogger

        if self.tracking_uri and self.run_id:
            self.attach(self.tracking_uri, self.run_id, task=self.task)
        for logger in [] if self.recorder else trainer.loggers:
            if isinstance(logger, MLFlowLogger) and logger.run_id:
                self.attach(
                    logger._tracking_uri,
                    logger.run_id,
                    getattr(logger, "recorder", None),
                    task=self.task or getattr(logger, "task", None),
                )
                break
        if self.recorder is not None and self.dirpath:
            self.recorder.set_tags({T.CHECKPOINT_DIR: str(Path(self.dirpath).resolve())})

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer)

    def _refresh_last(self, trainer) -> None:
        # Runs after validation of this epoch (and after Lightning's own saves), so last.ckpt holds the epoch's
        # end state, its metrics and this callback's updated best-k state.
        if (
            self.save_last
            and not trainer.fast_dev_run
            and not trainer.sanity_checking
            and self._last_saved_at_step != trainer.global_step
            and trainer.global_step > 0
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_saved_at_step = trainer.global_step

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        weights_only = self.save_weights_only or (self.best_weights_only and filepath != self.last_model_path)
        if trainer.is_global_zero and self.recorder and filepath == self.last_model_path:
            self.recorder.flush()  # steps trained up to last.ckpt are in the run before a resume relies on it
        if self._writes_in_background(trainer):
            checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only)  # every rank (collectives)
            if trainer.is_global_zero:
                self._write_slots.acquire()  # bounded: at most max_pending_writes snapshots in memory
                self._worker.submit(filepath, self._writer(snapshot(checkpoint), filepath))
        else:
            self._worker.wait_for(filepath)  # never rewrite a file (last.ckpt) while it is being uploaded
            trainer.save_checkpoint(filepath, weights_only)
        # What ModelCheckpoint._save_checkpoint does after writing.
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
        if not (trainer.is_global_zero and self.recorder):
            return
        name = Path(filepath).name
        tags = {T.CHECKPOINT_LAST: self._artifact(self.last_model_path)} if filepath == self.last_model_path else {}
        if filepath == self.best_model_path:
            self.best_model_step = trainer.global_step
            tags |= {
                T.CHECKPOINT_BEST: self._artifact(filepath),
                T.CHECKPOINT_BEST_STEP: trainer.global_step,
                T.CHECKPOINT_BEST_EPOCH: trainer.current_epoch,
                T.CHECKPOINT_MONITOR: str(self.monitor),
                T.CHECKPOINT_MODE: self.mode,
            }
            if self.best_model_score is not None:
                tags[T.CHECKPOINT_BEST_SCORE] = f"{float(self.best_model_score):.6g}"
        self._worker.submit(filepath, lambda: self._upload(filepath, name, tags))

    def _writes_in_background(self, trainer) -> bool:
        # Only where rank zero writes one plain torch file (single device, DDP); sharded strategies (FSDP,
        # DeepSpeed) and custom CheckpointIO plugins keep Lightning's own synchronous path.
        from lightning.pytorch.plugins.io import TorchCheckpointIO
        from lightning.pytorch.strategies import Strategy

        strategy = trainer.strategy
        return (
            self.background_writes
            and type(strategy).save_checkpoint is Strategy.save_checkpoint
            and type(strategy.checkpoint_io) is TorchCheckpointIO
        )

    def _writer(self, checkpoint: dict[str, Any], filepath: str):
        def write() -> None:
            try:
                atomic_save(checkpoint, filepath)
            finally:
                self._write_slots.release()

        return write

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        # Queued behind the file's write and upload: the file is deleted from disk, then from the run.
        if trainer.is_global_zero:
            self._worker.submit(filepath, lambda: self._evict(filepath))

    def _evict(self, filepath: str) -> None:
        Path(filepath).unlink(missing_ok=True)
        name = Path(filepath).name
        if self.recorder and name in self.uploaded:
            self._delete(name)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self.flush()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        if not getattr(exception, "corrupts_weights", False):  # never make non-finite weights the resume point
            self._refresh_last(trainer)
        self.flush()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.flush()

    def state_dict(self) -> dict[str, Any]:
        # Who wrote the checkpoint: lets resume refuse a checkpoint of another task or run.
        return {
            **super().state_dict(),
            "datamint_task": self.task,
            "datamint_run_id": self.run_id,
            "best_model_step": self.best_model_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_model_step = state_dict.get("best_model_step")
        if self.dirpath == state_dict.get("dirpath"):  # the files on disk were uploaded by the previous process
            self.uploaded = [Path(p).name for p in [*self.best_k_models, self.last_model_path] if p]

    # ---- uploads -------------------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> list[str]:
        """Wait for queued uploads; returns (and warns about) the failures so far."""
        if not self._worker.flush(timeout):
            rank_zero_warn(f"Checkpoint uploads to MLflow still running after {timeout} s.")
        failures = list(self._worker.errors) + (list(self.recorder.failures) if self.recorder else [])
        if self.recorder and self.recorder.pending:
            rank_zero_warn(
                f"{self.recorder.pending} MLflow record(s) could not be sent yet; they wait in "
                f"{self.recorder.journal.path} (replayed automatically, or run "
                f"`python -m datamint_lightning tracking replay {self.recorder.journal.path}`)."
            )
        return failures

    def _artifact(self, filepath: str) -> str:
        return f"{self.artifact_dir}/{Path(filepath).name}"

    def _upload(self, filepath: str, name: str, tags: dict[str, Any]) -> None:
        if not Path(filepath).exists():  # evicted before its turn came
            return
        root = self._local_artifact_root()
        if root is not None:  # the embedded store: link, don't copy
            link_or_copy(filepath, root / self.artifact_dir / name)
        else:
            self.recorder.log_artifact(filepath, self.artifact_dir)
        if name not in self.uploaded:
            self.uploaded.append(name)
        if tags:
            self.recorder.set_tags(tags)

    def _local_artifact_root(self) -> Path | None:
        """The run's artifact folder when it is on this machine (looked up once; None for remote stores)."""
        if self._artifact_root is False:
            if not self.recorder.online:
                return None
            try:
                uri = self.recorder.client.get_run(self.run_id).info.artifact_uri
            except Exception:  # store unreachable: upload through the recorder (journaled) this time
                return None
            self._artifact_root = local_artifact_root(uri)
        return self._artifact_root

    def _delete(self, name: str) -> None:
        self.recorder.delete_artifact(f"{self.artifact_dir}/{name}")
        if name in self.uploaded:
            self.uploaded.remove(name)
