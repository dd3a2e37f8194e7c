"""``UploadWorker``: one background thread that runs checkpoint write/upload/delete jobs in submission order.

One thread and FIFO order are what make the checkpoint files safe: a file is never written by two jobs at once,
an upload always reads the finished file, and an eviction runs after the upload it follows.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class UploadWorker:
    """FIFO jobs on a daemon thread, so training never waits for the disk or the network."""

    def __init__(self, name: str = "mlflow-checkpoint-uploads"):
        self.name = name
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pending: dict[str, int] = {}
        self._idle = threading.Condition()
        self.errors: list[str] = []

    def submit(self, key: str, job: Callable[[], None]) -> None:
        with self._idle:
            self._pending[key] = self._pending.get(key, 0) + 1
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()
        self._queue.put((key, job))

    def wait_for(self, key: str, timeout: float | None = None) -> None:
        """Block until no job for ``key`` is queued or running (e.g. before the file is overwritten)."""
        with self._idle:
            self._idle.wait_for(lambda: not self._pending.get(key), timeout)

    def wait_below(self, count: int, timeout: float | None = None) -> None:
        """Block until fewer than ``count`` jobs are queued or running (bounds the snapshots held in memory)."""
        with self._idle:
            self._idle.wait_for(lambda: sum(self._pending.values()) < count, timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every job ran; returns False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not any(self._pending.values()), timeout)

    def _work(self) -> None:
        while True:
            key, job = self._queue.get()
            try:
                job()
            except Exception as error:  # reported at flush; training goes on
                self.errors.append(f"{key}: {type(error).__name__}: {error}")
                log.warning("Background job for %s failed: %s", key, error)
            finally:
                with self._idle:
                    self._pending[key] -= 1
                    if not self._pending[key]:
                        del self._pending[key]
                    self._idle.notify_all()
