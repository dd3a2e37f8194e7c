"""``RunRecorder``: writes one run's records to MLflow and never lets an unreachable store stop training.

A record that cannot be sent goes to the run's offline journal and the recorder goes offline: later records are
journaled without touching the network until a cheap health check (at most every ``retry_interval`` seconds)
says the store is back, at which point the journal is replayed in order and sending resumes.

Metrics are sent by a background thread, in order, so a store round trip never holds up a training step; every
other record waits until the metrics queued before it are sent (``flush``), so records keep their order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from datamint_lightning.tracking.offline_journal import OfflineJournal, apply_record, journal_path_for

log = logging.getLogger(__name__)


class RunRecorder:
    """Thread-safe sender of metrics, tags, artifacts and the final status of run ``run_id``."""

    def __init__(self, tracking_uri: str, run_id: str, journal_path: str | Path, retry_interval: float = 30.0):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        own = journal_path_for(journal_path, run_id)
        if own != Path(journal_path):
            _leave_alone(Path(journal_path), own)
        self.journal = OfflineJournal(own, run_id, tracking_uri)
        self.retry_interval = retry_interval
        self.online = True
        self.failures: list[str] = []
        self._last_attempt = 0.0
        self._lock = threading.RLock()
        self._metrics: queue.Queue | None = None  # started with the first metric record

    @property
    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri)

    # ---- records -----------------------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Queued for the background sender (bounded: a store slower than training holds it up, never RAM)."""
        record = {"op": "metrics", "metrics": metrics, "step": step, "timestamp": int(time.time() * 1000)}
        with self._lock:
            if self._metrics is None:
                self._metrics = queue.Queue(maxsize=10_000)
                threading.Thread(target=self._send_metrics, name="mlflow-metrics", daemon=True).start()
        self._metrics.put(record)

    def _send_metrics(self) -> None:
        while True:
            record = self._metrics.get()
            try:
                self._send_now(record)
            finally:
                self._metrics.task_done()

    def flush(self) -> None:
        """Wait until every queued metric is sent (or journaled)."""
        if self._metrics is not None:
            self._metrics.join()

    def set_tags(self, tags: dict[str, Any]) -> bool:
        return self.send({"op": "tags", "tags": {k: str(v)[:5000] for k, v in tags.items()}})

    def log_artifact(self, local_path: str | Path, artifact_dir: str) -> bool:
        artifact_path = f"{artifact_dir}/{Path(local_path).name}" if artifact_dir else Path(local_path).name
        return self.send(
            {"op": "artifact", "local_path": str(Path(local_path).resolve()), "artifact_path": artifact_path}
        )

    def delete_artifact(self, artifact_path: str) -> bool:
        return self.send({"op": "delete_artifact", "artifact_path": artifact_path})

    def set_terminated(self, status: str) -> bool:
        return self.send({"op": "terminate", "status": status, "end_time": int(time.time() * 1000)})

    # ---- sending -----------------------------------------------------------------------------------------
    def send(self, record: dict[str, Any]) -> bool:
        """Send ``record`` now (after the metrics queued before it), or journal it when the store is
        unreachable; returns whether it was sent."""
        self.flush()
        return self._send_now(record)

    def _send_now(self, record: dict[str, Any]) -> bool:
        if not self.online and not self.reconnect():
            self.journal.append(record)
            return False
        try:  # no lock held here: a large upload on the worker thread must not block metric logging
            apply_record(self.client, self.run_id, record)
            return True
        except Exception as error:  # keep training: the record waits in the journal
            with self._lock:
                self.online = False
                self._last_attempt = time.monotonic()
                self.failures.append(f"{record['op']}: {type(error).__name__}: {str(error)[:300]}")
            log.warning(
                "MLflow store unreachable (%s); recording offline to %s until it is back.",
                type(error).__name__,
                self.journal.path,
            )
            self.journal.append(record)
            return False

    def reconnect(self, force: bool = False) -> bool:
        """When the store answers again, replay the journal; returns whether the recorder is online."""
        from datamint_lightning.tracking.tracking_uri import server_is_healthy

        with self._lock:
            if self.online and not force:
                return True
            if not force and time.monotonic() - self._last_attempt < self.retry_interval:
                return False
            self._last_attempt = time.monotonic()
            if not server_is_healthy(self.tracking_uri):
                self.online = False
                return False
            try:
                sent = self.journal.replay(self.client)
            except Exception as error:
                self.online = False
                self.failures.append(f"replay: {type(error).__name__}: {str(error)[:300]}")
                return False
            if sent:
                log.warning("MLflow store is back: replayed %d journaled record(s) to run %s.", sent, self.run_id)
            self.online = True
            return True

    @property
    def pending(self) -> int:
        """How many records wait in the journal."""
        self.flush()
        return len(self.journal)


def _leave_alone(other: Path, own: Path) -> None:
    """Say that ``other`` is another run's journal, kept for it, and how to send it."""
    journal = OfflineJournal.open(other)
    waiting = len(journal)
    if waiting:
        log.warning(
            "%s holds %d unsent record(s) of another run (%s); they are left for that run: send them with "
            "`python -m datamint_lightning tracking replay %s`. This run journals to %s if its store goes away.",
            other,
            waiting,
            journal.run_id,
            other,
            own.name,
        )
